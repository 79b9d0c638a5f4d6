"""Window bookkeeping of the Swin backbone: relative position index, cyclic-shift mask, token orders.

Built once per map size and device and cached for eager use; built inside the graph under
``torch.compile`` (plain index arithmetic that Inductor fuses).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

# Additive mask value for tokens from different regions after the cyclic shift. The official
# code uses -100 (not -inf); we keep it so pretrained weights see the logits they were trained with.
_SHIFT_MASK_VALUE = -100.0


def relative_position_index(window: int) -> Tensor:
    """Index into the ``((2w-1)^2, heads)`` bias table for every token pair: ``(w*w, w*w)`` long."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


@functools.lru_cache(maxsize=64)
def shift_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Additive mask ``(nW, w*w, w*w)`` keeping attention inside each region of the rolled map.

    Cached per map size and device: every shifted block of a stage shares one tensor that is
    built on ``device`` once, not copied there on every forward. Callers must not modify it
    in place.
    """
    # Built outside inference mode: a cached inference tensor would break later training.
    with torch.inference_mode(False), torch.no_grad():
        return _build_shift_mask(height, width, window, shift, device)


def _region_labels(size: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Per row (or column) of a padded map: 0, 1 or 2 for the three regions of the cyclic shift."""
    index = torch.arange(size, device=device)
    return (index >= size - window).long() + (index >= size - shift).long()


def _build_shift_mask(
    height: int, width: int, window: int, shift: int, device: torch.device
) -> Tensor:
    # Plain tensor arithmetic (no in-place writes): torch.compile traces and fuses it.
    rows = _region_labels(height, window, shift, device)
    cols = _region_labels(width, window, shift, device)
    region = rows[:, None] * 3 + cols[None, :]
    windows = region.view(height // window, window, width // window, window).transpose(1, 2)
    windows = windows.reshape(-1, window * window)
    same = windows[:, None, :] == windows[:, :, None]
    zero = torch.zeros((), device=device)
    return torch.where(same, zero, torch.full((), _SHIFT_MASK_VALUE, device=device))


@functools.lru_cache(maxsize=64)
def window_order(
    height: int, width: int, window: int, shift: int, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Token orders that turn a map into windows and back (cached per size and device).

    Returns:
        ``gather``: ``(Hp*Wp,)`` index into the padded, flattened ``(Hp, Wp)`` map listing the
        tokens of the rolled map window by window; ``scatter``: ``(H*W,)`` index into that
        window-major list giving each unpadded map position its token (undoing roll and padding).
    """
    # Built outside inference mode: a cached inference tensor would break later training.
    with torch.inference_mode(False), torch.no_grad():
        return _build_window_order(height, width, window, shift, device)


def _build_window_order(
    height: int, width: int, window: int, shift: int, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    hp, wp = height + (-height) % window, width + (-width) % window
    grid = torch.arange(hp * wp, device=device).view(hp, wp)
    if shift:
        grid = torch.roll(grid, shifts=(-shift, -shift), dims=(0, 1))
    gather = grid.view(hp // window, window, wp // window, window).transpose(1, 2).reshape(-1)
    inverse = torch.argsort(gather)  # gather is a permutation: argsort inverts it
    scatter = inverse.view(hp, wp)[:height, :width].reshape(-1)
    return gather, scatter


def window_tensors(
    height: int, width: int, window: int, shift: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``gather``, ``scatter`` and the shift mask (None without shift) of an ``H x W`` map.

    Eager: cached per size and device. Under ``torch.compile`` they are built in the graph
    (index arithmetic on constants, which Inductor fuses) so that no cache lookup or
    attribute mutation breaks the graph.
    """
    hp, wp = height + (-height) % window, width + (-width) % window
    if torch.compiler.is_compiling():
        gather, scatter = _build_window_order(height, width, window, shift, device)
        mask = _build_shift_mask(hp, wp, window, shift, device) if shift else None
        return gather, scatter, mask
    gather, scatter = window_order(height, width, window, shift, device)
    return gather, scatter, shift_mask(hp, wp, window, shift, device) if shift else None

