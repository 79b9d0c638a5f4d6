#!/usr/bin/env python
"""Do the fast inference paths give the masks of the plain float32 path?

Runs :class:`rrsis.Segmenter` on every sample of a split three ways, all with the network
alone (``compose="none"``) at the model's threshold:

* ``plain``: float32, the model as loaded (``fuse=False``): the reference;
* ``fused``: float32 with the batch norms folded into the convolutions (``fuse=True``, what
  ``Segmenter.from_pretrained`` does since session 12);
* ``bf16``: fused, under bfloat16 autocast (``--bf16`` of ``rrsis predict``).

and reports, against ``plain``, the share of pixels whose mask agrees (over all samples, and
the worst sample) and the largest probability difference, plus each path's mIoU / oIoU.

Usage::

    python scripts/check_fast_inference.py --data data/dubai --split val \\
        --out docs/results/session12/fast_inference_val.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="weights (default: the shipped model)")
    parser.add_argument("--data", default="data/dubai")
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N samples only")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 path")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from tqdm import tqdm

    from rrsis import Segmenter
    from rrsis.data.refsegrs import RefSegRS
    from rrsis.eval.metrics import RefSegMetrics
    from rrsis.models.speed import bf16_supported

    torch.set_num_threads(args.threads)
    paths = {
        "plain": {"fuse": False},
        "fused": {"fuse": True},
    }
    if not args.no_bf16:
        paths["bf16"] = {"fuse": True, "dtype": torch.bfloat16}
    segmenters = {
        name: Segmenter.from_pretrained(args.model, compose="none", **kwargs)
        for name, kwargs in paths.items()
    }
    threshold = segmenters["plain"].threshold
    dataset = RefSegRS(args.data, args.split)
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    metrics = {name: RefSegMetrics() for name in paths}
    agree = {name: 0 for name in paths if name != "plain"}
    worst = {name: 1.0 for name in agree}
    max_diff = {name: 0.0 for name in agree}
    seconds = {name: 0.0 for name in paths}
    pixels = 0
    for i in tqdm(range(n), desc=f"{args.split} samples"):
        sample = dataset[i]
        probs = {}
        for name, segmenter in segmenters.items():
            start = time.perf_counter()
            probs[name] = segmenter(sample["image"], sample["text"], return_probs=True)
            seconds[name] += time.perf_counter() - start
            pred = probs[name] > threshold
            metrics[name].update(pred[None], sample["mask"][None])
        reference = probs["plain"] > threshold
        pixels += reference.size
        for name in agree:
            same = (probs[name] > threshold) == reference
            agree[name] += int(same.sum())
            worst[name] = min(worst[name], float(same.mean()))
            max_diff[name] = max(max_diff[name], float(np.abs(probs[name] - probs["plain"]).max()))
    scores = {name: m.compute() for name, m in metrics.items()}
    result = {
        "model": args.model or "shipped default",
        "data": args.data,
        "split": args.split,
        "n": n,
        "threshold": threshold,
        "compose": "none",
        "threads": args.threads,
        "bf16_native": bf16_supported(),
        "fused": segmenters["fused"].fused,
        "paths": {
            name: {
                "mIoU": round(scores[name]["mIoU"], 2),
                "oIoU": round(scores[name]["oIoU"], 2),
                "ms_per_call": round(1000 * seconds[name] / n, 1),
                **(
                    {}
                    if name == "plain"
                    else {
                        "pixel_agreement_pct": round(100 * agree[name] / pixels, 3),
                        "min_sample_agreement_pct": round(100 * worst[name], 2),
                        "max_prob_diff": float(f"{max_diff[name]:.3g}"),
                    }
                ),
            }
            for name in paths
        },
        "command": "python scripts/check_fast_inference.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        from rrsis.eval.report import write_json

        write_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
