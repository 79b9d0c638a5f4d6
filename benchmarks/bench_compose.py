"""Latency of ``Segmenter(image, expression)`` with and without the composition rules.

One 512x512 tile, one expression of each kind, 2 CPU threads by default. Composition changes
what the network reads: a position or attribute costs the same single pass as the network alone
(it reads the class instead of the whole expression), a relation reads two texts (one batch of
2), and a rule that cannot decide adds the whole expression. Prints one JSON object.

    python benchmarks/bench_compose.py [--threads 2] [--repeats 10]

With ``--image`` a large image (over 768 px) is read in 512 px windows unless ``--tiling never``:

    python benchmarks/bench_compose.py --image ../shared/data/dubai-aerial/tile5/images/image_part_001.jpg
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

EXPRESSIONS = {
    "category": "building",
    "position": "building in the upper left",
    "relation": "building along the road",
    "attribute": "large building",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="weights path or registry name")
    parser.add_argument("--image", default=None, help="image file (default: a bundled sample)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tiling", choices=("auto", "always", "never"), default="auto")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from rrsis.infer.demo import SAMPLES_DIR, sample_images
    from rrsis.infer.images import to_rgb_uint8
    from rrsis.infer.predictor import Segmenter

    path = args.image or sample_images(SAMPLES_DIR)[0][0]
    image = to_rgb_uint8(path)
    result = {
        "benchmark": "segmenter_call_latency",
        "image": Path(path).name,
        "shape": list(image.shape),
        "threads": torch.get_num_threads(),
        "tiling": args.tiling,
        "latency_ms_median": {},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for compose in ("none", "all"):
            segmenter = Segmenter.from_pretrained(args.model, compose=compose, tiling=args.tiling)
            row = {}
            for kind, expression in EXPRESSIONS.items():
                for _ in range(args.warmup):
                    segmenter(image, expression)
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    segmenter(image, expression)
                    times.append((time.perf_counter() - t0) * 1000)
                row[kind] = round(statistics.median(times), 1)
            result["latency_ms_median"][compose] = row
    result["windows"] = segmenter.uses_windows(image.shape[:2])
    result["expressions"] = EXPRESSIONS
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
