"""Checkpoints of the official RMSIN code (Lsan2401/RMSIN) as rrsis models.

RMSIN's ``train.py`` saves LAVT's layout: ``{"model", "optimizer", "lr_scheduler", "epoch",
"args"}`` with BERT inside ``model`` as ``text_encoder.*`` (its default ``--model lavt_one``) or,
with ``--model lavt``, beside it as ``bert_model`` (keys prefixed ``module.`` by DDP). The Swin,
PWAM, gate and decoder weights are named as in LAVT, so :func:`convert_rmsin_state` hands them
to :func:`~rrsis.models.convert.convert_lavt_state` and renames only RMSIN's own parts: the
"various receptive" branches and visual gates of each stage, the CIM (``backbone.cim`` ->
``cim``, the same sub-names) and the routing functions of the rotated convolutions.
:func:`convert_rmsin_checkpoint` reads the file weights-only (``argparse.Namespace`` allowed for
the saved options; a checkpoint carrying code is refused) and infers the sizes from the tensors.

Assumed, as in the released code: one PWAM head, BERT heads of 64 channels (bert-base: 12), 20
tokens, the bert-base-uncased vocabulary, and 480 px inputs (the official CIM only runs at 480).
``tests/test_rmsin.py`` checks the logits against the official code's on a tiny random
checkpoint (``tests/data/rmsin_official/make.py``).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from rrsis.errors import ModelError
from rrsis.models.convert import convert_lavt_state, lavt_kwargs_from_state, load_converted
from rrsis.models.io import load_weights_only
from rrsis.models.registry import get_model
from rrsis.models.rmsin import RMSIN

#: Prefixes that training wrappers add to every key (DDP, Lightning).
WRAPPER_PREFIXES = ("module.", "model.")
# Official "various receptive" branch (RepBlock) -> our ReceptiveBranch.
_BRANCH_NAMES = {
    "brb_3x3.conv1": "first.kxk.0",
    "brb_3x3.bn1": "first.kxk.1",
    "brb_3x3.conv2": "first.kxk.2",
    "brb_3x3.bn2": "first.kxk.3",
    "brb_1x1.conv": "first.pointwise.0",
    "brb_1x1.bn": "first.pointwise.1",
    "brb_identity": "first.identity",
    "brb_3x3_2.conv1": "second.kxk.0",
    "brb_3x3_2.bn1": "second.kxk.1",
    "brb_3x3_2.conv2": "second.kxk.2",
    "brb_3x3_2.bn2": "second.kxk.3",
    "brb_1x1_2.conv": "second.pointwise.0",
    "brb_1x1_2.bn": "second.pointwise.1",
    "brb_identity_2": "second.identity",
}


def strip_wrappers(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensors of ``state`` without a prefix that every key shares (``module.``)."""
    state = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_rmsin_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Read an official RMSIN checkpoint.

    Returns:
        ``(model_state, bert_state)``: ``backbone.* / classifier.*`` and the BertModel keys.

    Raises:
        ModelError: unreadable file, a pickle carrying code, or not RMSIN's layout.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint")
    checkpoint = load_weights_only(path, allowed=(argparse.Namespace,))
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
        raise ModelError(f"{path}: not an official RMSIN checkpoint (no 'model' state dict)")
    mha = str(getattr(checkpoint.get("args"), "mha", "") or "")
    if mha and set(mha.split("-")) != {"1"}:
        raise ModelError(
            f"{path}: trained with multi-head PWAMs (--mha {mha}); only one head is supported"
        )
    state = strip_wrappers(checkpoint["model"])
    bert = checkpoint.get("bert_model")
    if isinstance(bert, Mapping):
        bert = strip_wrappers(bert)
    else:
        bert = {k.removeprefix("text_encoder."): v for k, v in state.items()
                if k.startswith("text_encoder.")}  # fmt: skip
    state = {k: v for k, v in state.items() if not k.startswith("text_encoder.")}
    if not any(k.startswith("backbone.cim.") for k in state):
        layout = "LAVT (use convert-lavt)" if "backbone.patch_embed.proj.weight" in state else ""
        raise ModelError(
            f"{path}: not an official RMSIN checkpoint (no backbone.cim.* weights)"
            + (f"; it looks like {layout}" if layout else "")
        )
    if not bert:
        raise ModelError(f"{path}: no BERT weights ('bert_model', or text_encoder.* in 'model')")
    return state, bert


def _rmsin_name(key: str) -> str | None:
    """Our name of an RMSIN-only key; ``None`` for the keys LAVT shares."""
    if key.startswith("backbone.cim."):
        return "cim." + key[len("backbone.cim.") :]
    match = re.match(r"backbone\.layers\.(\d+)\.visual_residual\.repblock\.(.+)\.(\w+)$", key)
    if match:
        stage, module, leaf = match.groups()
        return f"visual_branches.{stage}.{_BRANCH_NAMES.get(module, 'unknown.' + module)}.{leaf}"
    match = re.match(r"backbone\.layers\.(\d+)\.visual_gate\.(\d+)\.weight$", key)
    if match:
        return f"visual_gates.{match.group(1)}.net.{match.group(2)}.weight"
    return None


def convert_rmsin_state(
    state: Mapping[str, Tensor], bert: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Rename and reshape an official RMSIN state (plus its BERT) into ``rmsin_swin_base``'s."""
    shared = {k: v for k, v in state.items() if _rmsin_name(k) is None}
    converted = {}
    for key, value in convert_lavt_state(shared, bert).items():
        # The rotated convolutions' routing functions (LayerNorm wrapped in a proxy module).
        key = key.replace(".rounting_func.norm.norm.", ".routing.norm.")
        if value.dim() == 5:  # rotated kernels (n, C_out, C_in, 3, 3) -> (n * C_out, ...)
            value = value.flatten(0, 1)
        converted[key.replace(".rounting_func.", ".routing.")] = value
    for key, value in state.items():
        name = _rmsin_name(key)
        if name is None:
            continue
        value = value.float() if value.is_floating_point() else value
        if name.startswith("visual_gates."):
            value = value[..., None, None]  # linear -> 1x1 convolution
        converted[name] = value
    return converted


def rmsin_kwargs_from_state(
    state: Mapping[str, Tensor], bert: Mapping[str, Tensor], text_heads: int | None = None
) -> dict[str, Any]:
    """``rmsin_swin_base`` keyword arguments that fit an official checkpoint's tensors."""
    kwargs = lavt_kwargs_from_state(state, bert, text_heads=text_heads)
    kwargs.pop("align_corners", None)
    proj = state.get("backbone.cim.block.0.csa1.m.attention.proj.weight")
    grid = math.isqrt(int(proj.shape[0])) if proj is not None else 0
    if proj is None or grid * grid != proj.shape[0]:
        raise ModelError("not an official RMSIN layout: no square CIM token grid")
    kwargs["cim_grid"] = grid
    return kwargs


def convert_rmsin_checkpoint(path: str | Path, text_heads: int | None = None) -> RMSIN:
    """Build ``rmsin_swin_base`` holding an official RMSIN checkpoint's weights.

    Args:
        path: the official ``.pth`` file (see :func:`read_rmsin_checkpoint`).
        text_heads: BERT attention heads, when not ``hidden // 64``.

    Returns:
        the model in eval mode (``save_model(model, "rmsin.safetensors")`` writes it).

    Raises:
        ModelError: the file is not RMSIN's layout, or its weights do not fit.
    """
    state, bert = read_rmsin_checkpoint(path)
    model = get_model("rmsin_swin_base", **rmsin_kwargs_from_state(state, bert, text_heads))
    converted = convert_rmsin_state(state, bert)
    return load_converted(path, model, converted)
