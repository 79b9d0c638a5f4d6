"""Reading Swin weights: official checkpoints and transformers SwinModel, mapped to our names.

Our module names mirror the official Swin code (``patch_embed``, ``layers.i.blocks.j.attn.qkv``,
``layers.i.downsample``), so official checkpoints need almost no renaming; transformers names
are rewritten and its separate query/key/value projections fused into ``qkv``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from rrsis.errors import ModelError

# transformers SwinModel names (v4 and v5 layouts) -> official Swin names, applied in order.
_HF_RENAMES: list[tuple[str, str]] = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (r"^encoder\.layers\.", "layers."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.(self|relative_position_bias)\.relative_position_bias_table$",
     ".attn.relative_position_bias_table"),
    (r"\.attention\.(output\.dense|o_proj)\.", ".attn.proj."),
    (r"\.(intermediate\.dense|mlp\.fc1)\.", ".mlp.fc1."),
    (r"\.(output\.dense|mlp\.fc2)\.", ".mlp.fc2."),
    (r"^layernorm\.", "norm3."),
    (r"^hidden_states_norms\.stage1\.", "norm0."),
    (r"^hidden_states_norms\.stage2\.", "norm1."),
    (r"^hidden_states_norms\.stage3\.", "norm2."),
    (r"^hidden_states_norms\.stage4\.", "norm3."),
]  # fmt: skip
_HF_QKV = re.compile(r"^(.*)\.attention\.(?:self\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$")
# Keys with no counterpart in the backbone (classifier heads, index buffers, pooling).
_IGNORED = re.compile(
    r"(relative_position_index|attn_mask|^head\.|^classifier\.|^pooler\.|mask_token)"
)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a checkpoint file or transformers directory without running any pickled code."""
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return _read_state_dict(path / name)
        raise ModelError(
            f"{path}: no model.safetensors or pytorch_model.bin in Swin weights directory"
        )
    if not path.is_file():
        raise ModelError(f"{path}: Swin weights not found")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file or a pickle that carries code
        raise ModelError(f"{path}: cannot read Swin weights ({type(error).__name__})") from error
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: Swin weights are not a state dict")
    return state


def _from_transformers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a transformers SwinModel/SwinBackbone state dict; fuse q/k/v into ``qkv``."""
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("swin.")
        match = _HF_QKV.match(key)
        if match:
            prefix, part = match.group(1), (match.group(2) or match.group(3))[0]
            qkv.setdefault((prefix, match.group(4)), {})[part] = value
            continue
        for pattern, repl in _HF_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    for (prefix, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ModelError(f"Swin weights: incomplete query/key/value for {prefix}")
        name = re.sub(r"^encoder\.layers\.", "layers.", prefix) + f".attn.qkv.{kind}"
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def _resize_bias_table(table: Tensor, num_rows: int) -> Tensor:
    """Bicubic resize of a ``((2w-1)^2, heads)`` table to ``(num_rows, heads)`` (e.g. w 7 -> 12)."""
    side_in, side_out = round(table.shape[0] ** 0.5), round(num_rows**0.5)
    grid = table.T.reshape(1, -1, side_in, side_in).float()
    grid = F.interpolate(grid, size=(side_out, side_out), mode="bicubic", align_corners=False)
    return grid.reshape(-1, num_rows).T.to(table.dtype)


def load_swin_weights(encoder: nn.Module, path: str | Path) -> list[str]:
    """Load official or transformers Swin weights into ``encoder`` in place.

    Only the encoder's state dict is used, so this module does not depend on the model's code.

    Args:
        encoder: the target, a :class:`~rrsis.models.encoders.swin.SwinEncoder` (official
            module names); its depths/dims must match the checkpoint.
        path: ``.pth``/``.pt``/``.bin`` (``weights_only``), ``.safetensors`` or a directory.

    Returns:
        Names left at their initial values (the per-stage norms a classification
        checkpoint lacks).

    Raises:
        ModelError: unreadable file or a checkpoint of another architecture.
    """
    path = Path(path)
    state = _read_state_dict(path)
    if any("patch_embeddings" in key for key in state):
        state = _from_transformers(state)
    else:
        state = {k.removeprefix("backbone."): v for k, v in state.items()}
        state = {("norm3." + k[5:] if k.startswith("norm.") else k): v for k, v in state.items()}
    if any("position_embeddings" in key for key in state):
        raise ModelError(f"{path}: Swin with absolute position embeddings is not supported")
    own = encoder.state_dict()
    loaded: dict[str, Tensor] = {}
    for key, value in state.items():
        if _IGNORED.search(key):
            continue
        if key not in own:
            raise ModelError(f"{path}: unexpected Swin weight {key!r} (different depths?)")
        if key.endswith("relative_position_bias_table") and value.shape != own[key].shape:
            value = _resize_bias_table(value, own[key].shape[0])
        if value.shape != own[key].shape:
            raise ModelError(
                f"{path}: {key} has shape {tuple(value.shape)}, this Swin expects "
                f"{tuple(own[key].shape)} (embed_dim/heads differ)"
            )
        loaded[key] = value
    missing = [k for k in own if k not in loaded]
    if any(not re.match(r"norm\d\.", k) for k in missing):
        first = next(k for k in missing if not re.match(r"norm\d\.", k))
        raise ModelError(f"{path}: Swin weight {first!r} missing ({len(missing)} in all)")
    encoder.load_state_dict(loaded, strict=False)
    return missing
