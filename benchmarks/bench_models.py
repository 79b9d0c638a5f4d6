"""CPU speed and memory of every registered model at its default size; prints JSON.

Each model is measured in a fresh subprocess so its peak RSS is its own. Forward time is the
median over ``--repeats`` batch-1 forwards after warm-up, through ``rrsis.models.speed``
(eval, ``torch.inference_mode``, channels-last). ``--bf16`` adds the bfloat16 time (autocast,
linear/conv weights stored in bf16) and
the fraction of pixels whose fp32 and bf16 masks agree; ``--plain`` adds a forward without the
speed helpers (eval + ``no_grad``, contiguous NCHW input) for comparison.

Usage:
    .venv/bin/python benchmarks/bench_models.py --threads 2 --repeats 5 --bf16
    .venv/bin/python benchmarks/bench_models.py --models lavt_swin_base --bf16 --plain
    .venv/bin/python benchmarks/bench_models.py --models encoder:swin_base --bf16  # Swin-B alone
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

EXPRESSION = "the large white building to the left of the road"


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(run, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


class _EncoderOnly:
    """Makes a bare vision encoder look like a model for the timing loop (``encoder:swin_base``)."""

    input_size = 480

    def __init__(self):
        from rrsis.models.encoders.swin import SwinEncoder

        self.vision = SwinEncoder()
        self.text = None

    def tokenize(self, texts: list[str]):
        return None, None

    def __getattr__(self, name: str):
        return getattr(self.vision, name)

    def __call__(self, image, word_ids, word_mask):
        return self.vision(image)[-1]


def measure(name: str, threads: int, repeats: int, warmup: int, bf16: bool, plain: bool) -> dict:
    """Measure one model in this process (call in a fresh subprocess)."""
    import torch

    from rrsis.models.registry import get_model
    from rrsis.models.speed import channels_last, inference_mode, mask_agreement

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = _EncoderOnly() if name == "encoder:swin_base" else get_model(name)
    build_s = time.perf_counter() - start
    size = model.input_size
    image = torch.randn(1, 3, size, size)
    word_ids, word_mask = model.tokenize([EXPRESSION])
    result: dict[str, Any] = {
        "model": name,
        "vision": type(getattr(model, "vision", None)).__name__,
        "text": type(getattr(model, "text", None)).__name__,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "input_size": size,
        "threads": threads,
        "build_s": round(build_s, 2),
        "rss_after_build_mb": round(_peak_rss_mb(), 1),
    }
    if plain:
        model.eval()
        with torch.no_grad():
            times, _ = _time(lambda: model(image, word_ids, word_mask), repeats, warmup)
        result["plain_fp32_ms"] = round(1000 * statistics.median(times), 1)
    fast_image = channels_last(image)
    with inference_mode(model) as fast:
        times, cpu = _time(lambda: fast(fast_image, word_ids, word_mask), repeats, warmup)
        exact = fast(fast_image, word_ids, word_mask).float()
    result["fp32_ms"] = round(1000 * statistics.median(times), 1)
    result["fp32_cpu_ms"] = round(1000 * statistics.median(cpu), 1)
    result["fp32_min_ms"] = round(1000 * min(times), 1)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    if bf16:
        # Weights kept in bf16 (same numerics as autocast, without re-casting every forward).
        with inference_mode(model, dtype="bf16", cast_weights=True) as fast:
            times, cpu = _time(lambda: fast(fast_image, word_ids, word_mask), repeats, warmup)
            approx = fast(fast_image, word_ids, word_mask).float()
        result["bf16_ms"] = round(1000 * statistics.median(times), 1)
        result["bf16_cpu_ms"] = round(1000 * statistics.median(cpu), 1)
        if isinstance(model, _EncoderOnly):  # features, not masks: relative error instead
            error = (exact - approx).norm() / exact.norm()
            result["bf16_rel_error"] = round(error.item(), 4)
        else:
            result["bf16_agreement_pct"] = round(100 * mask_agreement(exact, approx), 3)
            result["fg_fp32_pct"] = round(100 * exact.argmax(1).float().mean().item(), 2)
        result["peak_rss_bf16_mb"] = round(_peak_rss_mb(), 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names (default: all registered)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    parser.add_argument("--plain", action="store_true", help="also time without speed helpers")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        report = measure(
            args.worker, args.threads, args.repeats, args.warmup, args.bf16, args.plain
        )
        print(json.dumps(report))
        return 0

    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    else:
        from rrsis.models.registry import list_models

        names = list_models()
    results = []
    for name in names:
        command = [sys.executable, __file__, "--worker", name, "--threads", str(args.threads),
                   "--repeats", str(args.repeats), "--warmup", str(args.warmup)]  # fmt: skip
        command += ["--bf16"] * args.bf16 + ["--plain"] * args.plain
        load_before = os.getloadavg()[0]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            results.append({"model": name, "error": tail[0]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        # Other processes on the machine inflate timings; keep the evidence with the numbers.
        results[-1]["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
