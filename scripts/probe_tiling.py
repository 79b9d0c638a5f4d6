#!/usr/bin/env python
"""Whole-image resize or 512 px sliding windows for images larger than a training crop?

The models are trained on 512 px crops resized to the model input (320 px for the default). A
``Segmenter`` call resizes any image to the input, so a 1126x1058 Dubai image part is seen at
less than half the training scale. This probe segments every full image part of one Dubai tile
for each class name present in it (more than 1 % of its labelled pixels), once resized whole and
once with :func:`rrsis.infer.scene.predict_scene` (512 px windows, 64 px overlap, blended) and
once with the same windows inside the ``Segmenter`` call (``tiling="always"``, the default for
images this large since session 13), and scores each against the part's own labels: mean IoU
over (part, class) pairs and pooled IoU.

Validation tile only (``--tile`` refuses 6, the test tile). Use weights that have not seen the
tile (v4, tiles 1-4: ``git show eb527d8:src/rrsis/weights/default.safetensors``).

Usage::

    python scripts/probe_tiling.py /tmp/v4/model.safetensors --tile 5 \
        --out docs/results/session13/tiling_v4_val.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEST_TILE = 6


def iou(pred: np.ndarray, truth: np.ndarray, labelled: np.ndarray) -> tuple[int, int]:
    """(intersection, union) over labelled pixels."""
    p, t = pred & labelled, truth & labelled
    return int((p & t).sum()), int((p | t).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--src", default=str(REPO.parent / "shared/data/dubai-aerial"))
    parser.add_argument("--tile", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.tile == TEST_TILE:
        parser.error("tile 6 is the test tile: choices are made on the validation tile")

    import torch
    from PIL import Image

    from rrsis.data.dubai import DUBAI_COLOURS, labels_from_colours
    from rrsis.eval.report import write_json
    from rrsis.infer.predictor import Segmenter
    from rrsis.infer.scene import predict_scene

    torch.set_num_threads(args.threads)
    seg = Segmenter.from_pretrained(args.weights, compose="none")
    names = list(DUBAI_COLOURS)
    parts = sorted((Path(args.src) / f"tile{args.tile}" / "images").glob("*.jpg"))
    modes = ("whole", "tiled", "windows")
    pairs, totals = [], {m: [0, 0] for m in modes}
    seconds = dict.fromkeys(modes, 0.0)
    for part in parts:
        image = np.asarray(Image.open(part).convert("RGB"))
        mask_path = part.parent.parent / "masks" / (part.stem + ".png")
        labels = labels_from_colours(np.asarray(Image.open(mask_path).convert("RGB")))
        if labels.shape != image.shape[:2]:
            print(f"{part.name}: mask size differs, skipped", file=sys.stderr)
            continue
        labelled = labels > 0
        present = [n for i, n in enumerate(names, 1) if (labels == i).sum() > 0.01 * labelled.sum()]
        start = time.perf_counter()
        whole = seg(image, present, tiling="never")
        seconds["whole"] += time.perf_counter() - start
        start = time.perf_counter()  # the same windows inside a Segmenter call (the default)
        windows = seg(image, present, tiling="always")
        seconds["windows"] += time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            out = predict_scene(part, present, Path(tmp) / "m.tif", seg, progress=False)
            seconds["tiled"] += time.perf_counter() - start
            import rasterio

            with rasterio.open(out) as ds:
                tiled = ds.read() > 0
        for k, name in enumerate(present):
            truth = labels == names.index(name) + 1
            row = {"part": part.name, "class": name, "fraction": round(float(truth.mean()), 4)}
            for mode, pred in (("whole", whole[k]), ("tiled", tiled[k]), ("windows", windows[k])):
                inter, union = iou(pred, truth, labelled)
                totals[mode][0] += inter
                totals[mode][1] += union
                row[mode] = round(100 * inter / max(union, 1), 2)
            pairs.append(row)
        print(part.name, [(r["class"], r["whole"], r["tiled"]) for r in pairs[-len(present) :]])
    result = {
        "probe": "tiling",
        "weights": args.weights,
        "tile": args.tile,
        "image_size": list(image.shape[:2]),
        "pairs": len(pairs),
        "mean_iou": {m: round(float(np.mean([r[m] for r in pairs])), 2) for m in totals},
        "pooled_iou": {m: round(100 * i / max(u, 1), 2) for m, (i, u) in totals.items()},
        "by_class": {
            n: {
                m: round(float(np.mean([r[m] for r in pairs if r["class"] == n])), 2)
                for m in totals
            }
            for n in names
            if any(r["class"] == n for r in pairs)
        },
        "seconds": {m: round(s, 1) for m, s in seconds.items()},
        "rows": pairs,
    }
    if args.out:
        write_json(result, args.out)
    print({k: result[k] for k in ("mean_iou", "pooled_iou", "by_class", "seconds")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
