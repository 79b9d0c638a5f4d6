#!/usr/bin/env python
"""Is the test tile's darker imagery why the model fails there? A val-only check.

Test tile 6 is darker than every training tile. This script re-colours the **val** split of a
Dubai RefSegRS tree (tile 5) two ways and scores a model on each copy with ``rrsis evaluate``:

* ``moments``: each channel mapped linearly from the val tile's mean and spread to the test
  tile's (statistics of the source image parts, ``--src``; only the images' pixels are read,
  never the test labels);
* ``scale``: every pixel multiplied by ``--scale`` (default 0.65, about the ratio of the two
  tiles' mean brightness).

Use weights that have not seen tile 5 (v4)::

    python scripts/probe_brightness.py /tmp/v4/model.safetensors --data data/dubai \\
        --work /tmp/shift --out docs/results/session14/brightness_shift.json

If the scores barely move, global brightness is not what makes the test tile hard.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RRSIS = str(Path(sys.executable).parent / "rrsis")


def tile_stats(src: Path, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (float64) over a tile's image parts."""
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for path in sorted((src / f"tile{tile}" / "images").glob("*.jpg")):
        x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).reshape(-1, 3)
        total += x.sum(0)
        squares += (x**2).sum(0)
        count += len(x)
    mean = total / count
    return mean, np.sqrt(squares / count - mean**2)


def shifted_copy(data: Path, out: Path, transform) -> int:
    """A copy of ``data`` whose val images are ``transform(image)``; the rest are links."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    for item in data.iterdir():
        if item.is_file() and not (out / item.name).exists():
            os.symlink(item.resolve(), out / item.name)
    if not (out / "masks").exists():
        os.symlink((data / "masks").resolve(), out / "masks")
    ids = [
        line.split(" ", 1)[0] for line in (data / "output_phrase_val.txt").read_text().splitlines()
    ]
    for sample_id in ids:
        x = np.asarray(Image.open(data / "images" / f"{sample_id}.tif").convert("RGB"), np.float64)
        y = np.clip(np.round(transform(x)), 0, 255).astype(np.uint8)
        Image.fromarray(y).save(out / "images" / f"{sample_id}.tif")
    return len(ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--data", type=Path, default=REPO / "data/dubai")
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared/data/dubai-aerial")
    parser.add_argument("--scale", type=float, default=0.65)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    m5, s5 = tile_stats(args.src, 5)
    m6, s6 = tile_stats(args.src, 6)
    variants = {
        "as_is": None,
        "moments": lambda x: (x - m5) / s5 * s6 + m6,
        "scale": lambda x: x * args.scale,
    }
    result = {
        "weights": args.weights,
        "val_tile_mean_std": [m5.round(2).tolist(), s5.round(2).tolist()],
        "test_tile_mean_std": [m6.round(2).tolist(), s6.round(2).tolist()],
        "scale": args.scale,
        "threshold": args.threshold,
        "command": "python scripts/probe_brightness.py " + " ".join(argv or sys.argv[1:]),
        "variants": {},
    }
    for name, transform in variants.items():
        data = args.data
        if transform is not None:
            data = args.work / name
            shifted_copy(args.data, data, transform)
        path = args.work / f"{name}.json"
        cmd = [RRSIS, "evaluate", "--model", args.weights, "--data", str(data), "--split", "val"]
        cmd += ["--threshold", str(args.threshold), "--compose", "none", "--resamples", "0"]
        cmd += ["--no-progress", "--overwrite", "--out", str(path)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        report = json.loads(path.read_text())
        result["variants"][name] = {
            "mIoU": round(report["overall"]["mIoU"], 2),
            "oIoU": round(report["overall"]["oIoU"], 2),
            "by_category": {
                k: round(v["mIoU"], 2) for k, v in report["breakdown"]["category"].items()
            },
        }
        print(name, result["variants"][name], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
