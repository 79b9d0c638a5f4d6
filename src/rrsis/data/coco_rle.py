"""COCO segmentations (RLE with string or list counts, polygons) decoded to boolean masks.

pycocotools decodes an RLE whose run lengths do not add up to its ``size`` into a wrong mask
without a word; :func:`decode_segmentation` checks the runs first and refuses such an RLE.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _string_counts(counts: str | bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, in Python).

    Each run is a little-endian sequence of 5-bit groups, one per character (code minus 48,
    so 0-63): ``0x20`` says another group follows, ``0x10`` of the last group is the sign.
    From the third run on, a run is stored as its difference to the run two before.
    """
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data):
                raise ValueError("RLE counts string is truncated")
            group = data[position] - 48
            if not 0 <= group < 64:
                raise ValueError(f"RLE counts string holds {chr(data[position])!r}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position, shift = position + 1, shift + 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _checked_rle(rle: dict[str, Any]) -> tuple[int, int]:
    """``(height, width)`` of an RLE whose counts cover exactly ``height * width`` pixels.

    Raises:
        ValueError: no counts, a malformed size, a negative run, or runs that do not sum to
            the size (a shorter or longer mask than the size says).
    """
    size, counts = rle.get("size"), rle.get("counts")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in size)
    ):
        raise ValueError(f"RLE size must be [height, width], got {size!r}")
    height, width = int(size[0]), int(size[1])
    if isinstance(counts, (str, bytes)):
        runs = _string_counts(counts)
    elif isinstance(counts, list):
        runs = [int(v) for v in counts]
    else:
        raise ValueError("RLE without counts")
    if any(run < 0 for run in runs):
        raise ValueError("RLE counts hold a negative run")
    if sum(runs) != height * width:
        raise ValueError(
            f"RLE counts sum to {sum(runs)}, not its size {height}x{width} = {height * width}"
        )
    return height, width


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode a COCO segmentation (RLE with str/list counts, or polygons) to ``bool (H, W)``.

    Args:
        segmentation: ``{"size": [h, w], "counts": str | list}``, a list of such RLEs, or a
            list of polygons ``[[x0, y0, x1, y1, ...], ...]``.
        height: image height.
        width: image width.

    Returns:
        Union of all parts as a boolean mask ``(height, width)``.

    Raises:
        ValueError: unrecognised structure, or an RLE whose counts do not sum to its size
            (pycocotools would decode it into a wrong mask without a word).
    """
    from pycocotools import mask as mask_utils

    parts = segmentation if isinstance(segmentation, list) else [segmentation]
    if parts and all(isinstance(p, (int, float)) for p in parts):
        parts = [parts]  # one flat polygon
    rles = []
    polygons = []
    for part in parts:
        if isinstance(part, dict):
            rle = dict(part)
            rle_height, rle_width = _checked_rle(rle)
            if isinstance(rle["counts"], list):
                rle = mask_utils.frPyObjects(rle, rle_height, rle_width)
            elif isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            rles.append(rle)
        elif isinstance(part, list) and len(part) >= 6:
            polygons.append([float(v) for v in part])
        else:
            raise ValueError(f"unrecognised segmentation part of type {type(part).__name__}")
    if len({tuple(rle["size"]) for rle in rles}) > 1:
        raise ValueError("RLE parts of different sizes")
    if polygons:
        rles.extend(mask_utils.frPyObjects(polygons, height, width))
    if not rles:
        return np.zeros((height, width), dtype=bool)
    decoded = mask_utils.decode(rles)  # (H, W, n) uint8
    return decoded.reshape(decoded.shape[0], decoded.shape[1], -1).any(axis=-1)
