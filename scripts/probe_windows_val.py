#!/usr/bin/env python
"""Windows or whole-image resize, for expressions of every kind on images over 768 px (val only).

Scores ``Segmenter`` calls with ``tiling="always"`` (512 px windows, the default for such
images) and ``tiling="never"`` (one resize to the model input) on a RefSegRS-format split whose
images are larger than a training crop, e.g. the Dubai val tile cut into 1024 px crops::

    rrsis data dubai ../shared/data/dubai-aerial /tmp/dubai1024 --crop 1024
    python scripts/probe_windows_val.py /tmp/v4/model.safetensors /tmp/dubai1024 \
        --out docs/results/session13/windows_v4_val1024.json

Metrics are :class:`rrsis.eval.metrics.RefSegMetrics` (mIoU, oIoU, Pr@X), overall and by
expression kind. ``--split`` accepts ``val`` and ``train``, never ``test``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

MODES = ("never", "always")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("data")
    parser.add_argument("--split", choices=("val", "train"), default="val")
    parser.add_argument("--compose", default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from rrsis.data.refsegrs import RefSegRS
    from rrsis.eval.metrics import RefSegMetrics
    from rrsis.eval.report import write_json
    from rrsis.infer.predictor import Segmenter

    torch.set_num_threads(args.threads)
    seg = Segmenter.from_pretrained(args.weights, compose=args.compose)
    data = RefSegRS(args.data, args.split)
    overall = {m: RefSegMetrics() for m in MODES}
    by_kind: dict[str, dict[str, RefSegMetrics]] = {}
    seconds = dict.fromkeys(MODES, 0.0)
    for index in range(len(data)):
        sample = data[index]
        kind = (sample.get("meta") or {}).get("kind", "unknown")
        truth = torch.from_numpy(sample["mask"])[None]
        for mode in MODES:
            start = time.perf_counter()
            mask = seg(sample["image"], sample["text"], tiling=mode)
            seconds[mode] += time.perf_counter() - start
            pred = torch.from_numpy(mask)[None]
            overall[mode].update(pred, truth)
            by_kind.setdefault(kind, {m: RefSegMetrics() for m in MODES})[mode].update(pred, truth)
    result = {
        "probe": "windows_vs_whole",
        "weights": args.weights,
        "data": f"{args.data}:{args.split}",
        "compose": args.compose,
        "n": len(data),
        "image_size": list(sample["image"].shape[:2]),
        "overall": {m: overall[m].compute() for m in MODES},
        "by_kind": {k: {m: v[m].compute() for m in MODES} for k, v in sorted(by_kind.items())},
        "seconds": {m: round(s, 1) for m, s in seconds.items()},
    }
    if args.out:
        write_json(result, args.out)
    brief = {
        "mIoU": {m: round(result["overall"][m]["mIoU"], 2) for m in MODES},
        "oIoU": {m: round(result["overall"][m]["oIoU"], 2) for m in MODES},
        "kind_mIoU": {
            k: {m: round(v[m]["mIoU"], 2) for m in MODES} for k, v in result["by_kind"].items()
        },
        "seconds": result["seconds"],
    }
    print(json.dumps(brief, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
