"""Latency of the default model on one 512x512 tile (batch 1) on N CPU threads, and peak RSS.

Prints one JSON object. Uses the shipped weights, or ``--model PATH|NAME`` (a registry name gives
random weights: same speed, meaningless masks).

    python benchmarks/bench_default_model.py [--model lgce_effnet_minilm] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="weights path or registry name")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--expression", default="vehicle in the parking area")
    parser.add_argument(
        "--input-size",
        type=int,
        help="resize tiles to this side instead of the model's training size (what a model "
        "trained at that size would cost)",
    )
    parser.add_argument(
        "--no-fuse",
        action="store_true",
        help="keep the batch norms unfolded (Segmenter(fuse=False))",
    )
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from rrsis.infer.predictor import Segmenter
    from rrsis.weights import default_weights_path

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segmenter = Segmenter.from_pretrained(args.model, fuse=not args.no_fuse)
    load_s = time.perf_counter() - start
    if args.input_size:
        segmenter.input_size = args.input_size
    tile = np.random.default_rng(0).integers(0, 256, (1, args.tile, args.tile, 3), dtype=np.uint8)
    word_ids, word_mask = segmenter.tokenize([args.expression])
    for _ in range(args.warmup):
        segmenter.predict_tiles(tile, word_ids, word_mask)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        segmenter.predict_tiles(tile, word_ids, word_mask)
        times.append(time.perf_counter() - t0)
    times_ms = sorted(t * 1000 for t in times)
    model = segmenter.model
    result = {
        "benchmark": "default_model_tile_latency",
        "model": args.model or str(default_weights_path()),
        "architecture": model.config.get("name") if hasattr(model, "config") else None,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "tile": args.tile,
        "model_input": segmenter.input_size,
        "batch": 1,
        "fused": segmenter.fused or False,
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "latency_ms_median": round(statistics.median(times_ms), 1),
        "latency_ms_p90": round(times_ms[int(0.9 * (len(times_ms) - 1))], 1),
        "latency_ms_min": round(times_ms[0], 1),
        "tiles_per_s": round(1000 / statistics.median(times_ms), 2),
        # ru_maxrss is KiB on Linux, bytes on macOS.
        "peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / (1024 * 1024 if sys.platform == "darwin" else 1024),
            1,
        ),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
