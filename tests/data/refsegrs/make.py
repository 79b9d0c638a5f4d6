"""Write the tiny RefSegRS fixture tree next to this script (3 train + 3 val + 3 test).

The tree follows the released RefSegRS format exactly: ``images/<id>.tif`` (RGB, PackBits),
``masks/<id>.tif`` (single channel uint8, 0/255, PackBits), ``output_phrase_<split>.txt``
with ``<id> <expression>`` lines, and no ``meta_*.jsonl``. It is written with tifffile
directly, not with rrsis' writer, so the reader is tested against an independent tree.

Run: ``python tests/data/refsegrs/make.py`` (deterministic; rewrites ``tree/``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import tifffile

HEIGHT, WIDTH = 48, 64  # not square, so a transposed read would be caught

# id, split, expression, list of foreground boxes (row0, row1, col0, col1).
# Sizes cover the stats buckets: small < 1 %, medium 1-10 %, large > 10 % of 3072 px,
# and 1, 2-5 and > 5 connected components.
SAMPLES = [
    ("0", "train", "road", [(20, 30, 0, 64)]),  # 640 px: large, 1 component
    ("1", "train", "vehicle", [(5, 8, 5, 8), (30, 33, 40, 43)]),  # 18 px: small, 2
    ("2", "train", "building along the road", [(2, 12, 30, 50)]),  # 200 px: medium, 1
    ("3", "val", "car in the parking area", [(4 + 6 * i, 6 + 6 * i, 4, 6) for i in range(7)]),
    ("4", "val", "long truck", [(10, 18, 10, 26)]),  # 128 px: medium, 1
    ("5", "val", "low vegetation", [(0, 24, 0, 30)]),  # 720 px: large, 1
    ("6", "test", "light-duty vehicle", [(2, 6, 2, 6), (20, 24, 20, 24), (40, 44, 50, 54)]),
    ("7", "test", "impervious surface", [(0, 48, 32, 64)]),  # 1536 px: large, 1
    ("8", "test", "tree", [(30, 35, 10, 15)]),  # 25 px: small, 1
]


def make(root: Path) -> None:
    """Write the fixture tree under ``root`` (removed first)."""
    if root.exists():
        shutil.rmtree(root)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for sample_id, split, expression, boxes in SAMPLES:
        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        for r0, r1, c0, c1 in boxes:
            mask[r0:r1, c0:c1] = 255
        image = rng.integers(0, 120, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        image[mask > 0] += np.array([100, 60, 20], dtype=np.uint8)
        tifffile.imwrite(
            root / "images" / f"{sample_id}.tif", image, photometric="rgb", compression="packbits"
        )
        tifffile.imwrite(
            root / "masks" / f"{sample_id}.tif",
            mask,
            photometric="minisblack",
            compression="packbits",
        )
        lines[split].append(f"{sample_id} {expression}\n")
    for split, split_lines in lines.items():
        (root / f"output_phrase_{split}.txt").write_text("".join(split_lines), encoding="utf-8")


if __name__ == "__main__":
    make(Path(__file__).resolve().parent / "tree")
