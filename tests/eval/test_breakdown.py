"""Breakdown buckets (size / scatter / kind) and per-group metrics."""

from __future__ import annotations

import numpy as np
import pytest

from rrsis.eval.breakdown import sample_groups, scatter_group, size_group
from rrsis.eval.metrics import RefSegMetrics


def _mask(pixels: list[tuple[int, int]], side: int = 10) -> np.ndarray:
    mask = np.zeros((side, side), dtype=bool)
    for row, col in pixels:
        mask[row, col] = True
    return mask


def test_size_bucket_edges() -> None:
    # On a 10x10 tile one pixel is exactly 1 % and ten pixels exactly 10 %: both medium.
    assert sample_groups({}, _mask([]))["size"] == "empty"
    assert sample_groups({}, _mask([(0, 0)]))["size"] == "medium"
    assert sample_groups({}, _mask([(0, c) for c in range(10)]))["size"] == "medium"
    assert sample_groups({}, _mask([(0, c) for c in range(10)] + [(5, 5)]))["size"] == "large"
    assert sample_groups({}, _mask([(0, 0)], side=20))["size"] == "small"  # 0.25 %
    assert size_group(0.0099) == "small" and size_group(0.1001) == "large"


def test_scatter_uses_eight_connectivity() -> None:
    diagonal = _mask([(0, 0), (1, 1), (2, 2)])
    apart = _mask([(0, 0), (5, 5)])
    many = _mask([(0, 0), (0, 2), (0, 4), (0, 6), (0, 8), (9, 0)])
    assert sample_groups({}, diagonal)["scatter"] == "single"
    assert sample_groups({}, apart)["scatter"] == "scattered"
    assert sample_groups({}, apart)["components"] == "2-5"
    assert sample_groups({}, many)["components"] == ">5"
    assert sample_groups({}, _mask([]))["scatter"] == "empty"
    assert scatter_group(1) == "single" and scatter_group(3) == "scattered"


def test_meta_statistics_win_over_target() -> None:
    # The evaluator passes full-resolution statistics; a resized target must not override them.
    groups = sample_groups({"area_frac": 0.5, "n_components": 3}, _mask([(0, 0)], side=20))
    assert groups["size"] == "large"
    assert groups["scatter"] == "scattered"


def test_kind_from_meta_else_unknown() -> None:
    assert sample_groups({"kind": "relation"}, _mask([]))["kind"] == "relation"
    assert sample_groups({}, _mask([]))["kind"] == "unknown"


def test_kind_inferred_from_text() -> None:
    assert sample_groups({}, _mask([]), "vehicle in the parking area")["kind"] == "relation"
    assert sample_groups({}, _mask([]), "the buildings")["kind"] == "category"


def test_per_group_metrics() -> None:
    side = 10
    small_side = 20
    # Sample A: large single object (30 px), predicted half -> IoU 0.5.
    target_a = np.zeros((side, side), bool)
    target_a[:3] = True
    pred_a = np.zeros_like(target_a)
    pred_a[:3, :5] = True

    # Pad everything to one batch shape: 20x20 tiles, so area fractions use 400 pixels.
    def pad(mask: np.ndarray) -> np.ndarray:
        out = np.zeros((small_side, small_side), bool)
        out[: mask.shape[0], : mask.shape[1]] = mask
        return out

    # A (30/400 = 7.5 %, single, medium), IoU 15/30.
    # B (2 px apart = 0.5 %, scattered, small), predicted exactly -> IoU 1.
    # C (empty target), empty prediction -> IoU 0 by default.
    target_b = _mask([(0, 0), (10, 10)], side=small_side)
    targets = np.stack([pad(target_a), target_b, np.zeros((small_side,) * 2, bool)])
    preds = np.stack([pad(pred_a), target_b, np.zeros((small_side,) * 2, bool)])
    metas = [{"kind": "category"}, {"kind": "relation"}, {"kind": "category"}]
    metrics = RefSegMetrics()
    metrics.update(preds, targets, metas=metas)
    breakdown = metrics.compute_breakdown()
    # No sample names its class: no category grouping.
    assert set(breakdown) == {"size", "scatter", "components", "kind"}
    assert list(breakdown["size"]) == ["small", "medium", "empty"]
    assert breakdown["size"]["medium"]["mIoU"] == pytest.approx(50.0)
    assert breakdown["size"]["small"]["mIoU"] == pytest.approx(100.0)
    assert breakdown["size"]["empty"]["n"] == 1
    assert breakdown["scatter"]["single"]["n"] == 1
    assert breakdown["scatter"]["scattered"]["Pr@0.9"] == pytest.approx(100.0)
    assert breakdown["kind"]["category"]["n"] == 2
    assert breakdown["kind"]["category"]["mIoU"] == pytest.approx(25.0)
    assert breakdown["kind"]["relation"]["oIoU"] == pytest.approx(100.0)
    # Groups partition the split.
    for groups in breakdown.values():
        assert sum(g["n"] for g in groups.values()) == 3


def test_category_breakdown_per_class_and_in_the_table() -> None:
    from rrsis.eval.report import evaluation_markdown

    assert sample_groups({"category": "road"}, _mask([]))["category"] == "road"
    assert sample_groups({}, _mask([]))["category"] == "unknown"
    target = _mask([(0, 0), (0, 1)])
    miss = np.zeros_like(target)
    metrics = RefSegMetrics()
    metas = [
        {"kind": "category", "category": "water"},
        {"kind": "position", "category": "road"},
        {"kind": "category"},
    ]
    metrics.update(np.stack([target, miss, target]), np.stack([target] * 3), metas=metas)
    breakdown = metrics.compute_breakdown()
    assert list(breakdown["category"]) == ["road", "water", "unknown"]
    assert breakdown["category"]["water"]["mIoU"] == pytest.approx(100.0)
    assert breakdown["category"]["road"]["mIoU"] == pytest.approx(0.0)
    table = evaluation_markdown({"overall": metrics.compute(), "breakdown": breakdown})
    assert "| category: road | 1 |" in table and "| category: water | 1 |" in table
