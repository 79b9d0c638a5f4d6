"""Windows over an image larger than the model's training crops, and their blending.

Tiles of ``tile x tile`` px start every ``tile - overlap`` px; the last row/column of tiles is
moved back so that it ends at the border, so every tile has the same size (an image smaller
than a tile is one tile of its own size). Each tile's probabilities are weighted by a ramp from
near 0 at the tile border to 1 at ``overlap / 2`` px inside, and the output is
``sum(w * p) / sum(w)``: seams are blended, and a constant model gives a constant image.

Why windows: the models were trained on crops (512 px for RefSegRS), and resizing a larger
image whole to the model input shrinks its objects below the scale the model learnt. On the
validation tile's 1126x1058 image parts, 512 px windows score mean IoU 59.2 against 54.7 for the
whole resize, at about ten times the time. :meth:`rrsis.infer.predictor.Segmenter.predict_windows`
(images in memory) and :func:`rrsis.infer.scene.predict_scene` (scenes read window by window)
share these weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)``; the last one ends at ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def ramp_weights(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights ``(size,)``: linear from the border to 1 at ``overlap // 2`` px."""
    half = max(overlap // 2, 1)
    idx = np.arange(size, dtype=np.float32)
    dist = np.minimum(idx + 0.5, size - idx - 0.5)
    return np.clip(dist / half, 1e-3, 1.0).astype(np.float32)


def blend_windows(
    images: np.ndarray,
    window: int,
    overlap: int,
    predict: Callable[[np.ndarray], np.ndarray],
    batch: int = 4,
) -> np.ndarray:
    """Probabilities of whole images from those of their ``window`` px windows, blended.

    Args:
        images: ``uint8 (B, H, W, 3)``.
        window: window side in px (smaller images: one window of their own size).
        overlap: px shared by neighbouring windows.
        predict: ``windows uint8 (k, h, w, 3) -> float32 (E, k, h, w)`` probabilities.
        batch: windows per ``predict`` call.

    Returns:
        ``float32 (E, B, H, W)`` probabilities.
    """
    n_images, height, width = images.shape[:3]
    win_h, win_w = min(window, height), min(window, width)
    stride = window - overlap
    ys, xs = tile_starts(height, win_h, stride), tile_starts(width, win_w, stride)
    weight = ramp_weights(win_h, overlap)[:, None] * ramp_weights(win_w, overlap)[None, :]
    total = np.zeros((height, width), np.float32)
    for y0 in ys:
        for x0 in xs:
            total[y0 : y0 + win_h, x0 : x0 + win_w] += weight
    out: np.ndarray | None = None
    places = [(b, y0, x0) for b in range(n_images) for y0 in ys for x0 in xs]
    for start in range(0, len(places), batch):
        chunk = places[start : start + batch]
        probs = predict(np.stack([images[b, y : y + win_h, x : x + win_w] for b, y, x in chunk]))
        if out is None:
            out = np.zeros((probs.shape[0], n_images, height, width), np.float32)
        for k, (b, y, x) in enumerate(chunk):
            out[:, b, y : y + win_h, x : x + win_w] += probs[:, k] * weight
    out /= total
    return out


@dataclass(frozen=True)
class WindowGrid:
    """Windows of ``height x width`` px at rows ``ys`` and columns ``xs`` (all pairs)."""

    ys: list[int]
    xs: list[int]
    height: int
    width: int

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


def _span(lo: int, hi: int, length: int, tile: int, stride: int, min_side: int):
    """Window starts and side covering ``[lo, hi)`` of an axis ``[0, length)``, laid out from
    ``lo`` as over an image that starts there; a span under ``min_side`` px is widened."""
    side = min(max(hi - lo, min_side), length)
    lo = max(0, min(lo - (side - (hi - lo)) // 2, length - side))
    size = min(tile, side)
    return [lo + start for start in tile_starts(side, size, stride)], size


def grid_over(
    box: tuple[int, int, int, int] | None,
    shape: tuple[int, int],
    tile: int,
    stride: int,
    min_side: int = 1,
) -> WindowGrid:
    """The windows over the rows ``[r0, r1)`` and columns ``[c0, c1)`` of an image of ``shape``.

    ``box``: the bounding box of its valid pixels (``None``: none, no windows). The windows
    are those of the box cut out as an image of its own, so a nodata margin around the data
    changes neither the windows nor what they see.
    """
    if box is None:
        return WindowGrid([], [], min(tile, shape[0]), min(tile, shape[1]))
    r0, r1, c0, c1 = box
    ys, height = _span(r0, r1, shape[0], tile, stride, min_side)
    xs, width = _span(c0, c1, shape[1], tile, stride, min_side)
    return WindowGrid(ys, xs, height, width)


def fill_invalid(tiles: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Give, in place, each invalid pixel of ``tiles`` the colour of its nearest valid one.

    Args:
        tiles: ``uint8 (B, h, w, 3)``.
        valid: ``bool (B, h, w)``; a tile without a valid pixel is left as it is.

    A nodata fill (zeros, the nodata value) read as imagery looks like dark water or shadow to
    the network and changes its answer on the valid pixels beside it; the nearest valid
    colours continue the image instead.
    """
    from scipy import ndimage  # only scenes with nodata need it: not at import time

    for tile, ok in zip(tiles, valid):
        if ok.all() or not ok.any():
            continue
        rows, cols = ndimage.distance_transform_edt(
            ~ok, return_distances=False, return_indices=True
        )
        tile[...] = tile[rows, cols]
    return tiles
