"""RefSegMetrics against hand-computed cases (LAVT definitions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rrsis.eval.metrics import RefSegMetrics


def _hand_batch() -> tuple[np.ndarray, np.ndarray]:
    """Four 2x2 samples with known I/U: 1/2, 3/4, 0/0 (both empty), 0/1 (missed pixel)."""
    pred = np.array(
        [
            [[1, 1], [0, 0]],
            [[1, 1], [1, 1]],
            [[0, 0], [0, 0]],
            [[0, 0], [0, 0]],
        ],
        dtype=bool,
    )
    target = np.array(
        [
            [[1, 0], [0, 0]],
            [[1, 1], [1, 0]],
            [[0, 0], [0, 0]],
            [[0, 0], [0, 1]],
        ],
        dtype=bool,
    )
    return pred, target


def test_hand_computed_reference_default() -> None:
    pred, target = _hand_batch()
    metrics = RefSegMetrics()
    metrics.update(pred, target)
    result = metrics.compute()
    assert result["n"] == 4
    # oIoU = (1 + 3 + 0 + 0) / (2 + 4 + 0 + 1)
    assert result["oIoU"] == pytest.approx(100 * 4 / 7)
    # Reference behaviour: the empty/empty sample scores IoU 0.
    assert result["mIoU"] == pytest.approx(100 * (0.5 + 0.75 + 0 + 0) / 4)
    assert result["Pr@0.5"] == pytest.approx(50.0)
    assert result["Pr@0.6"] == pytest.approx(25.0)
    assert result["Pr@0.7"] == pytest.approx(25.0)
    assert result["Pr@0.8"] == pytest.approx(0.0)
    assert result["Pr@0.9"] == pytest.approx(0.0)


def test_empty_iou_one_counts_empty_hit_as_perfect() -> None:
    pred, target = _hand_batch()
    metrics = RefSegMetrics(empty_iou=1.0)
    metrics.update(pred, target)
    result = metrics.compute()
    assert result["mIoU"] == pytest.approx(100 * (0.5 + 0.75 + 1 + 0) / 4)
    assert result["Pr@0.5"] == pytest.approx(75.0)
    assert result["Pr@0.9"] == pytest.approx(25.0)
    # oIoU only sums pixels, so the empty sample does not change it.
    assert result["oIoU"] == pytest.approx(100 * 4 / 7)


def test_threshold_is_inclusive() -> None:
    # I = 3, U = 5 -> IoU exactly 0.6, which counts for Pr@0.6 (IoU >= X).
    pred = np.zeros((1, 1, 5), dtype=bool)
    pred[0, 0, :3] = True
    target = np.ones((1, 1, 5), dtype=bool)
    metrics = RefSegMetrics()
    metrics.update(pred, target)
    result = metrics.compute()
    assert result["Pr@0.6"] == 100.0
    assert result["Pr@0.7"] == 0.0
    assert result["mIoU"] == pytest.approx(60.0)


def test_all_empty_split_oiou_follows_empty_iou() -> None:
    empty = np.zeros((2, 3, 3), dtype=bool)
    for empty_iou, expected in ((0.0, 0.0), (1.0, 100.0)):
        metrics = RefSegMetrics(empty_iou=empty_iou)
        metrics.update(empty, empty)
        assert metrics.compute()["oIoU"] == expected
        assert metrics.compute()["mIoU"] == expected


def test_batch_size_invariance_and_torch_input() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((13, 8, 8)) > 0.5
    target = rng.random((13, 8, 8)) > 0.6
    target[3] = False  # include an empty target
    pred[3] = False
    all_at_once = RefSegMetrics()
    all_at_once.update(pred, target)
    one_by_one = RefSegMetrics()
    for i in range(13):
        one_by_one.update(torch.from_numpy(pred[i : i + 1]), torch.from_numpy(target[i : i + 1]))
    uneven = RefSegMetrics()
    for start, stop in ((0, 5), (5, 6), (6, 13)):
        uneven.update(pred[start:stop].astype(np.uint8), target[start:stop].astype(np.uint8))
    assert one_by_one.compute() == all_at_once.compute()
    assert uneven.compute() == all_at_once.compute()
    assert one_by_one.compute_breakdown() == all_at_once.compute_breakdown()
    assert all_at_once.compute()["n"] == 13


def test_reset_and_empty_state() -> None:
    metrics = RefSegMetrics()
    # Nothing scored yet: zeros, not NaN (no division by an empty count).
    expected = {f"Pr@0.{t}": 0.0 for t in range(5, 10)} | {"oIoU": 0.0, "mIoU": 0.0, "n": 0}
    assert metrics.compute() == expected
    pred, target = _hand_batch()
    metrics.update(pred, target)
    assert len(metrics) == 4
    metrics.reset()
    assert len(metrics) == 0 and metrics.compute()["n"] == 0


def test_bad_inputs_are_rejected() -> None:
    metrics = RefSegMetrics()
    with pytest.raises(ValueError, match="same shape"):
        metrics.update(np.zeros((1, 2, 2), bool), np.zeros((1, 3, 3), bool))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        metrics.update(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="metas"):
        metrics.update(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool), metas=[{}])
    with pytest.raises(ValueError, match="empty_iou"):
        RefSegMetrics(empty_iou=2.0)


def test_samples_records_ids_and_iou() -> None:
    pred, target = _hand_batch()
    metrics = RefSegMetrics()
    metas = [{"id": f"s{i}", "kind": "category"} for i in range(4)]
    metrics.update(pred, target, metas=metas)
    records = metrics.samples()
    assert [r["id"] for r in records] == ["s0", "s1", "s2", "s3"]
    assert [r["I"] for r in records] == [1, 3, 0, 0]
    assert [r["U"] for r in records] == [2, 4, 0, 1]
    assert records[1]["IoU"] == pytest.approx(0.75)
    assert records[2]["size"] == "empty"
