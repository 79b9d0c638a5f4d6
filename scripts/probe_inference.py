#!/usr/bin/env python
"""Probe inference-time options of a trained model on the Dubai VAL tile: input size and
test-time augmentation (TTA), each at several foreground thresholds.

TTA averages the foreground probabilities of transformed copies of the image, mapped back:
``hflip`` (identity + horizontal flip) or ``flip_rot`` (6 views: identity, horizontal and
vertical flips, the three 90-degree rotations). As in training, only orientation-free expressions
(:func:`rrsis.engine.datamodule.orientation_free`) are transformed; the others get one pass.

Validation only, like every choice made for the shipped model: ``--split`` accepts ``val`` and
``train``, never ``test``.

Usage::

    python scripts/probe_inference.py src/rrsis/weights/default.safetensors --sizes 320,384 \\
        --out docs/results/session6_inference_probe.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
MODES = ("none", "hflip", "flip_rot")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--root", type=Path, default=REPO / "data" / "dubai")
    parser.add_argument("--split", default="val", choices=["val", "train"])
    parser.add_argument("--sizes", default="320", help="comma-separated input sizes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "src"))
    import numpy as np
    import torch
    import torch.nn.functional as F

    from rrsis.engine.datamodule import orientation_free
    from rrsis.eval.evaluate import _images_to_input, open_dataset
    from rrsis.eval.metrics import summarize
    from rrsis.models.io import load_model

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    model = load_model(args.weights).eval()
    dataset = open_dataset(args.root, args.split)
    inter = {(s, m, t): [] for s in sizes for m in MODES for t in THRESHOLDS}
    union = {key: [] for key in inter}

    def foreground(x, ids, mask):
        return model(x, ids, mask).float().softmax(1)[:, 1:2]

    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(len(dataset)):
            sample = dataset[i]
            ids, word_mask = model.tokenize([sample["text"]])
            target = torch.from_numpy(np.asarray(sample["mask"], dtype=bool))
            free = orientation_free(sample)
            for size in sizes:
                x = _images_to_input([sample["image"]], size, model.mean, model.std)
                plain = foreground(x, ids, word_mask)
                probs = {m: plain for m in MODES}
                if free:
                    hflip = foreground(x.flip(-1), ids, word_mask).flip(-1)
                    probs["hflip"] = (plain + hflip) / 2
                    views = [plain, hflip, foreground(x.flip(-2), ids, word_mask).flip(-2)]
                    for k in (1, 2, 3):
                        rotated = foreground(torch.rot90(x, k, (2, 3)), ids, word_mask)
                        views.append(torch.rot90(rotated, -k, (2, 3)))
                    probs["flip_rot"] = torch.stack(views).mean(0)
                for mode in MODES:
                    prob = F.interpolate(
                        probs[mode], size=target.shape, mode="bilinear", align_corners=False
                    )[0, 0]
                    for t in THRESHOLDS:
                        pred = prob > t
                        inter[(size, mode, t)].append(int((pred & target).sum()))
                        union[(size, mode, t)].append(int((pred | target).sum()))
            if i % 50 == 0:
                print(f"{i}/{len(dataset)} {time.perf_counter() - start:.0f} s", flush=True)

    table = {}
    for size in sizes:
        for mode in MODES:
            curve = {
                t: summarize(inter[(size, mode, t)], union[(size, mode, t)]) for t in THRESHOLDS
            }
            best = max(THRESHOLDS, key=lambda t: curve[t]["mIoU"])
            table[f"{size}/{mode}"] = {
                "best_threshold": best,
                "mIoU": round(curve[best]["mIoU"], 2),
                "oIoU": round(curve[best]["oIoU"], 2),
                "curve": {
                    str(t): [round(curve[t]["mIoU"], 2), round(curve[t]["oIoU"], 2)]
                    for t in THRESHOLDS
                },
            }
            print(f"{size} {mode}: mIoU {table[f'{size}/{mode}']['mIoU']} at {best}", flush=True)
    result = {
        "weights": str(args.weights),
        "split": args.split,
        "n": len(dataset),
        "command": "python scripts/probe_inference.py " + " ".join(argv or sys.argv[1:]),
        "results": table,
    }
    if args.out:
        from rrsis.eval.report import write_json

        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
