"""LAVT against the official code: same weights, same logits, forward and training step times.

Builds the official LAVT (Swin-B + BERT-base, random weights) from a LAVT-RIS checkout given on
the command line (``benchmarks/_official_lavt.py``), converts it to ``lavt_swin_base`` with
``rrsis.models.convert.convert_lavt_checkpoint``, checks that both give the same logits, then
times, alternately in one run (one call of each variant per round, medians over the rounds):

* forward: ``official`` (``torch.no_grad``, as LAVT's ``test.py``), ``ours`` (rrsis's inference
  path: ``rrsis.models.speed.inference_mode``, channels-last), ``ours_folded`` (the same with
  its batch norms folded into the convolutions, as ``Segmenter`` runs a model; its logits are
  checked against the official ones too), ``ours_compiled`` (``ours`` under ``torch.compile``,
  default Inductor backend; compile time from an empty Inductor cache, reported apart);
* training step (forward, weighted cross-entropy, backward, AdamW over every parameter, same
  batch): ``official`` and ``ours`` (contiguous weights, as the official code) and
  ``ours_channels_last`` (the layout ``rrsis train`` uses).

``--dtype bf16`` runs every variant under bfloat16 autocast. Ratios are ours / official (below 1:
ours is faster). ``--profile`` adds where the forward of each spends its time
(``torch.profiler`` self time per operator, ``benchmarks/_official_profile.py``): the matrix
products and convolutions against the rest, the FLOPs of those products (the same for both
models: they do the same arithmetic), the machine's rate on one large matrix product, and the
bounds these set on our forward against the official one (see :func:`profile`). On a GPU::

    git clone https://github.com/yz93/LAVT-RIS /tmp/lavt_ris
    python benchmarks/bench_official.py --official /tmp/lavt_ris --device cuda --batch 8 --dtype bf16

On CPU (2 cores, batch 1), and the tiny configuration the tests use::

    python benchmarks/bench_official.py --official /tmp/lavt_ris --batch 1 --threads 2 --no-train
    python benchmarks/bench_official.py --official /tmp/lavt_ris --tiny --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _official_lavt import FULL, TINY, build_official, convert_official  # noqa: E402
from _official_profile import gemm_rate, profile_forwards  # noqa: E402

EXPRESSION = "the long building along the road on the left"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="LAVT-RIS checkout")
    parser.add_argument("--size", type=int, help="input side (default 480; 96 with --tiny)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny Swin/BERT (tests, CPU probes)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    parser.add_argument(
        "--train-repeats", type=int, help="timed training rounds (default: --repeats)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-train", action="store_true", help="skip the training step")
    parser.add_argument(
        "--no-fold", action="store_true", help="skip ours with batch norms folded (ours_folded)"
    )
    parser.add_argument("--no-forward", action="store_true", help="skip the forward timing")
    parser.add_argument(
        "--profile", action="store_true", help="operator profile of the forward of each"
    )
    parser.add_argument(
        "--profile-rounds", type=int, default=3, help="profiled forwards of each (least kept)"
    )
    return parser.parse_args(argv)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def alternate(
    variants: dict[str, Callable[[], object]], repeats: int, warmup: int, device: str
) -> dict[str, list[float]]:
    """Milliseconds of each variant, one call of each per round (warm-up rounds dropped)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + repeats):
        for name, call in variants.items():
            _sync(device)
            start = time.perf_counter()
            call()
            _sync(device)
            if round_ >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def summarise(times: dict[str, list[float]], reference: str = "official") -> dict:
    result: dict = {}
    for name, values in times.items():
        result[f"{name}_ms"] = round(statistics.median(values), 2)
        result[f"{name}_min_ms"] = round(min(values), 2)
    for name in times:
        if name != reference:
            result[f"{name}_over_{reference}"] = round(
                statistics.median(times[name]) / statistics.median(times[reference]), 3
            )
    return result


def peak_memory(call: Callable[[], object], device: str) -> float | None:
    """Peak GiB of one call on CUDA (None on CPU)."""
    import torch

    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def compare_logits(official, ours, image, ids, mask) -> dict:
    """fp32 logits of both models on the same inputs: largest difference, mask disagreement."""
    import torch

    with torch.no_grad():
        expected = official(image, ids, mask).float()
        actual = ours(image, ids, mask).float()
    differ = (expected.argmax(1) != actual.argmax(1)).float().mean().item()
    return {
        "logits_max_abs_diff": float((expected - actual).abs().max()),
        "logits_max_abs": float(expected.abs().max()),
        "mask_pixels_differing_pct": round(100 * differ, 4),
    }


def fold_copy(ours, inputs):
    """A copy of ``ours`` with its batch norms folded into its convolutions, as ``Segmenter``
    runs it (:func:`rrsis.models.speed.fuse_for_inference`), and what was folded."""
    import copy

    from rrsis.models.speed import channels_last, fuse_for_inference

    image, ids, mask = inputs
    folded = copy.deepcopy(ours).eval()
    counts = fuse_for_inference(folded, (channels_last(image), ids, mask))
    return folded, counts


def forward_timing(args, official, ours, inputs, folded=None) -> dict:
    import torch

    from rrsis.models.speed import channels_last, inference_mode

    image, ids, mask = inputs
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    official.eval()
    ours.eval()
    fast_image = channels_last(image)
    result: dict = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(inference_mode(ours, args.dtype))
        variants = {
            "official": lambda: _no_grad_autocast(official, (image, ids, mask), autocast),
            "ours": lambda: ours(fast_image, ids, mask),
        }
        if folded is not None:
            stack.enter_context(inference_mode(folded, args.dtype))
            variants["ours_folded"] = lambda: folded(fast_image, ids, mask)
        if not args.no_compile:
            # an empty Inductor cache of its own, so that compile_s is a cold compile
            cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="inductor-"))
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
            compiled = torch.compile(ours)
            start = time.perf_counter()
            compiled(fast_image, ids, mask)
            _sync(args.device)
            result["compile_s"] = round(time.perf_counter() - start, 1)
            variants["ours_compiled"] = lambda: compiled(fast_image, ids, mask)
        times = alternate(variants, args.repeats, args.warmup, args.device)
    result.update(summarise(times))
    return result


def profile(args, official, ours, inputs, forward: dict | None) -> dict:
    """Operator profile of each forward (``benchmarks/_official_profile.py``) and two bounds.

    ``bound``: our dense products' profiled time over the official forward's profiled time.
    ``bound_at_peak``: our products' FLOPs at the best rate measured on this machine
    (``peak_gflop_per_s``: one large square matrix product, or any profiled product class of
    either model if faster) over the official forward's fastest timed run. Above 0.5, ours
    cannot take half the official time without changing its arithmetic.
    """
    import torch

    from rrsis.models.speed import channels_last, inference_mode

    image, ids, mask = inputs
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    fast_image = channels_last(image)
    official.eval()
    with inference_mode(ours, args.dtype):
        calls = {
            "official": lambda: _no_grad_autocast(official, inputs, autocast),
            "ours": lambda: ours(fast_image, ids, mask),
        }
        result = profile_forwards(calls, args.device, args.profile_rounds)
    result["square_gemm_gflop_per_s"] = gemm_rate(args.device, args.dtype)
    rates = [result["square_gemm_gflop_per_s"]]
    for name in calls:
        rates += [result[name][key] for key in ("gemm_gflop_per_s", "conv_gflop_per_s")]
    result["peak_gflop_per_s"] = max(rate for rate in rates if rate)
    result["bound"] = round(result["ours"]["dense_ms"] / result["official"]["total_ms"], 3)
    official_ms = forward["official_min_ms"] if forward else result["official"]["total_ms"]
    best_ms = result["ours"]["dense_gflops"] / result["peak_gflop_per_s"] * 1000
    result["ours_dense_ms_at_peak"] = round(best_ms, 1)
    result["bound_at_peak"] = round(best_ms / official_ms, 3)
    return result


def _no_grad_autocast(model, inputs, autocast):
    import torch

    with torch.no_grad(), autocast:
        return model(*inputs)


def training_step(model, inputs, target, dtype: str, device: str) -> Callable[[], None]:
    """One AdamW step of weighted cross-entropy (LAVT's weights 0.9 / 1.1) on a fixed batch."""
    import torch
    import torch.nn.functional as F

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    weight = torch.tensor([0.9, 1.1], device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logits = model(*inputs)
        loss = F.cross_entropy(logits.float(), target, weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def train_timing(args, official, ours, inputs, target) -> dict:
    import copy

    import torch

    from rrsis.models.speed import channels_last

    image, ids, mask = inputs
    ours_cl = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    steps = {
        "official": training_step(official, inputs, target, args.dtype, args.device),
        "ours": training_step(ours, inputs, target, args.dtype, args.device),
        "ours_channels_last": training_step(
            ours_cl, (channels_last(image), ids, mask), target, args.dtype, args.device
        ),
    }
    memory = {name: peak_memory(step, args.device) for name, step in steps.items()}
    times = alternate(steps, args.train_repeats or args.repeats, args.warmup, args.device)
    result = summarise(times)
    if args.device == "cuda":
        result.update({f"{name}_peak_gib": gib for name, gib in memory.items()})
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    shape = TINY if args.tiny else FULL
    size = args.size or shape.size
    official = build_official(args.official, shape)
    ours = convert_official(official, shape)
    official.to(args.device)
    ours.to(args.device)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(args.batch, 3, size, size, generator=generator).to(args.device)
    ids, mask = ours.tokenize([EXPRESSION] * args.batch)
    inputs = (image, ids.to(args.device), mask.to(args.device))
    target = (torch.rand(args.batch, size, size, generator=generator) > 0.8).long()
    result: dict = {
        "benchmark": "lavt_vs_official",
        "model": "lavt_swin_base (tiny)" if args.tiny else "lavt_swin_base",
        "device": torch.cuda.get_device_name()
        if args.device == "cuda"
        else (platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "size": size,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "load_avg_1m_before": round(os.getloadavg()[0], 2),
        "agreement_fp32": compare_logits(official.eval(), ours.eval(), *inputs),
    }
    folded = None
    if not args.no_fold:
        folded, result["folded"] = fold_copy(ours, inputs)
        result["agreement_folded_fp32"] = compare_logits(official, folded, *inputs)
    if not args.no_forward:
        result["forward"] = forward_timing(args, official, ours, inputs, folded)
    if args.profile:
        result["profile"] = profile(args, official, ours, inputs, result.get("forward"))
    if not args.no_train:
        result["train_step"] = train_timing(args, official, ours, inputs, target.to(args.device))
    result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    result["torch"] = torch.__version__
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
