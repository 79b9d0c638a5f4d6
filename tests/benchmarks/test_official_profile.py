"""benchmarks/_official_profile.py: FLOPs of products, convolutions and fused attention, and
the split of an operator profile into them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture
def profile(repo_script):
    return repo_script("benchmarks/_official_profile.py")


def test_count_flops_of_linear_conv_and_attention(profile):
    linear = torch.nn.Linear(8, 16)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)

    def call():
        linear(torch.randn(10, 8))
        conv(torch.randn(1, 3, 6, 6))
        F.scaled_dot_product_attention(q, k, v)

    with torch.inference_mode():
        flops = profile.count_flops(call)
    assert flops["addmm"] == 2 * 10 * 8 * 16
    assert flops["convolution"] == 2 * 36 * 4 * 3 * 9
    # fused attention on CPU (its own formula), or the two batched products it falls back to
    attention = sum(n for op, n in flops.items() if op not in ("addmm", "convolution"))
    assert attention == 2 * 2 * 3 * 5 * 7 * (8 + 8)


def test_summary_splits_products_convolutions_and_the_rest(profile):
    times = {
        "aten::addmm": (30.0, 3),
        "aten::mkldnn_convolution": (50.0, 2),
        "aten::add": (20.0, 4),
    }
    flops = {"addmm": 3_000_000_000, "convolution": 10_000_000_000}
    summary = profile._summary(times, flops, top=2)
    assert summary["total_ms"] == 100.0
    assert (summary["gemm_ms"], summary["conv_ms"], summary["dense_share"]) == (30.0, 50.0, 0.8)
    assert (summary["gemm_gflops"], summary["conv_gflops"]) == (3.0, 10.0)
    assert summary["gemm_gflop_per_s"] == 100.0 and summary["conv_gflop_per_s"] == 200.0
    assert [row["op"] for row in summary["top"]] == ["aten::mkldnn_convolution", "aten::addmm"]
