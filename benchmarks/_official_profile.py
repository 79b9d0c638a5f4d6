"""Where one forward spends its time, and how fast its products could run at best.

``profile_forwards`` runs each model's forward under ``torch.profiler`` (self time per operator,
the least over alternating rounds), splits it into the matrix products
(``GEMM_OPS``: linear layers, batched products, fused attention), the convolutions
(``CONV_OPS``) and the rest, and counts the FLOPs of each model's products with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and fused attention included, so
that two models doing the same arithmetic show the same count). ``gemm_rate`` measures the
machine's rate on one large square matrix product in the run's dtype: the products of a
forward cannot run faster than that, which bounds the forward from below.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from math import prod

import torch

#: Matrix products: self time (wrappers such as ``aten::linear`` or ``aten::matmul`` spend
#: almost none of their own).
GEMM_OPS = frozenset(
    {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::_addmm_activation",
        "aten::mkldnn_linear",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_efficient_attention",
        "aten::_scaled_dot_product_flash_attention",
        "aten::_scaled_dot_product_cudnn_attention",
    }
)
#: Convolutions.
CONV_OPS = frozenset(
    {
        "aten::mkldnn_convolution",
        "aten::cudnn_convolution",
        "aten::_slow_conv2d_forward",
        "aten::slow_conv_dilated2d",
        "aten::_nnpack_spatial_convolution",
    }
)
DENSE_OPS = GEMM_OPS | CONV_OPS
#: FlopCounterMode operators counted as convolutions (the rest are matrix products).
_CONV_FLOP_OPS = ("convolution", "_convolution", "convolution_overrideable")


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``softmax(q k^T) v`` (two batched products), any number of batch dims."""
    batch = prod(query_shape[:-2])
    rows, width, keys = query_shape[-2], query_shape[-1], key_shape[-2]
    return 2 * batch * rows * keys * (width + value_shape[-1])


def count_flops(call: Callable[[], object]) -> dict[str, int]:
    """FLOPs of one call per operator (``mm``, ``addmm``, ``bmm``, ``convolution``, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        call()
    counts = counter.get_flop_counts().get("Global", {})
    return {str(op).split(".")[-1]: int(n) for op, n in counts.items() if n}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _self_times(call: Callable[[], object], device: str) -> dict[str, tuple[float, int]]:
    """``{operator: (self ms, calls)}`` of one profiled call (device time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        call()
        _sync(device)
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    return {
        e.key: (getattr(e, attr) / 1000, e.count)
        for e in prof.key_averages()
        if getattr(e, attr, 0) > 0
    }


def _summary(times: dict[str, tuple[float, int]], flops: dict[str, int], top: int) -> dict:
    total = sum(ms for ms, _ in times.values())
    gemm_ms = sum(ms for op, (ms, _) in times.items() if op in GEMM_OPS)
    conv_ms = sum(ms for op, (ms, _) in times.items() if op in CONV_OPS)
    conv_flops = sum(n for op, n in flops.items() if op in _CONV_FLOP_OPS)
    gemm_flops = sum(flops.values()) - conv_flops
    ranked = sorted(times.items(), key=lambda item: item[1][0], reverse=True)[:top]

    def rate(n: int, ms: float) -> float | None:
        return round(n / ms / 1e6, 1) if ms else None

    return {
        "total_ms": round(total, 1),
        "dense_ms": round(gemm_ms + conv_ms, 1),
        "dense_share": round((gemm_ms + conv_ms) / total, 3),
        "gemm_ms": round(gemm_ms, 1),
        "conv_ms": round(conv_ms, 1),
        "dense_gflops": round((gemm_flops + conv_flops) / 1e9, 2),
        "gemm_gflops": round(gemm_flops / 1e9, 2),
        "conv_gflops": round(conv_flops / 1e9, 2),
        "gflops_by_op": {op: round(n / 1e9, 2) for op, n in sorted(flops.items())},
        "gemm_gflop_per_s": rate(gemm_flops, gemm_ms),
        "conv_gflop_per_s": rate(conv_flops, conv_ms),
        "top": [{"op": op, "ms": round(ms, 1), "calls": n} for op, (ms, n) in ranked],
    }


def profile_forwards(
    calls: dict[str, Callable[[], object]], device: str, rounds: int = 3, top: int = 12
) -> dict[str, dict]:
    """Operator profile of each call: the least self time of each operator over the rounds.

    Each call runs once unprofiled first (warm caches), then ``rounds`` times under the
    profiler, one of each per round. Other processes on the machine only ever add time, so
    each operator keeps its least time over the rounds. FLOPs are counted in one more call.
    """
    least: dict[str, dict[str, tuple[float, int]]] = {name: {} for name in calls}
    for call in calls.values():
        call()
        _sync(device)
    for _ in range(rounds):
        for name, call in calls.items():
            for op, (ms, count) in _self_times(call, device).items():
                if op not in least[name] or ms < least[name][op][0]:
                    least[name][op] = (ms, count)
    return {name: _summary(least[name], count_flops(call), top) for name, call in calls.items()}


def gemm_rate(device: str, dtype: str, side: int | None = None, repeats: int = 3) -> float:
    """GFLOP/s of the best of ``repeats`` square matrix products in ``dtype`` (fp32 / bf16)."""
    side = side or (8192 if device == "cuda" else 2048)
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(side, side, generator=generator).to(device, kind)
    b = torch.randn(side, side, generator=generator).to(device, kind)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return round(2 * side**3 / best / 1e9, 1)
