"""Intervals over test images and seeds (``rrsis.eval.paired``) on cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from rrsis.errors import RRSISError
from rrsis.eval.paired import SeedRuns, paired_interval


def _records(ious, sizes=None, images=None) -> list[dict]:
    n = len(ious)
    sizes = sizes or ["small"] * n
    images = images or [f"img{i // 2}" for i in range(n)]  # two expressions per image
    return [
        {
            "id": f"s{i}",
            "image": images[i],
            "IoU": float(iou),
            "size": sizes[i],
            "scatter": "single",
        }
        for i, iou in enumerate(ious)
    ]


def _runs(*per_seed) -> SeedRuns:
    return SeedRuns.from_samples([_records(ious) for ious in per_seed])


def test_identical_models_give_zero_difference() -> None:
    rng = np.random.default_rng(0)
    seeds = [rng.uniform(0, 1, 40) for _ in range(2)]
    a, b = _runs(*seeds), _runs(*seeds)
    diff = paired_interval(a, b, resamples=500)
    assert diff["delta"] == 0.0
    assert diff["interval"] == [0.0, 0.0]  # paired: the same draw of images and seeds
    assert diff["p_b_ahead"] == 0.0
    assert diff["n"] == 40 and diff["n_images"] == 20 and diff["runs"] == [2, 2]


def test_model_better_on_every_sample_has_a_positive_interval() -> None:
    rng = np.random.default_rng(1)
    base = [rng.uniform(0.1, 0.6, 30) for _ in range(2)]
    a = _runs(*base)
    b = _runs(*(ious + 0.2 for ious in base))
    diff = paired_interval(a, b, resamples=500)
    assert diff["delta"] == pytest.approx(20.0, abs=0.01)
    # B is 0.2 ahead on every sample of every seed: every resample says +20 points.
    assert diff["interval"][0] == pytest.approx(20.0, abs=0.01)
    assert diff["interval"][1] == pytest.approx(20.0, abs=0.01)
    assert diff["p_b_ahead"] == 1.0
    # Reversed, the interval is negative.
    back = paired_interval(b, a, resamples=500)
    assert back["interval"][1] < 0


def test_noisy_difference_interval_covers_the_truth_and_widens_with_seed_noise() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, 60)
    a = _runs(base, base)
    same_seeds = _runs(np.clip(base + 0.05, 0, 1), np.clip(base + 0.05, 0, 1))
    # Two seeds that disagree (one +0.15, one -0.05): same mean gain, more training noise.
    split_seeds = _runs(np.clip(base + 0.15, 0, 1), np.clip(base - 0.05, 0, 1))
    steady = paired_interval(a, same_seeds, resamples=1000)
    noisy = paired_interval(a, split_seeds, resamples=1000)
    assert steady["interval"][0] > 0
    width = steady["interval"][1] - steady["interval"][0]
    assert noisy["interval"][1] - noisy["interval"][0] > width
    assert noisy["interval"][0] < 0 < noisy["interval"][1]  # the seed noise covers 0


def test_subset_and_single_model_interval() -> None:
    ious = [1.0, 0.0, 0.5, 0.5]
    runs = SeedRuns.from_samples([_records(ious, sizes=["small", "large", "small", "large"])])
    small = paired_interval(None, runs, {"size": "small"}, resamples=200)
    assert small["n"] == 2 and small["b"] == 75.0 and small["a"] is None
    assert small["interval"][0] <= 75.0 <= small["interval"][1]
    empty = paired_interval(None, runs, {"size": "medium"}, resamples=200)
    assert empty["n"] == 0 and empty["b"] is None and empty["interval"] is None
    with pytest.raises(RRSISError, match="kind"):
        paired_interval(None, runs, {"kind": "position"}, resamples=200)


def test_runs_on_other_samples_are_refused() -> None:
    with pytest.raises(RRSISError, match="other samples"):
        SeedRuns.from_samples([_records([0.1, 0.2]), _records([0.1, 0.2, 0.3])])
    a = SeedRuns.from_samples([_records([0.1, 0.2])])
    b = SeedRuns.from_samples([_records([0.1, 0.2, 0.3])])
    with pytest.raises(RRSISError, match="different samples"):
        paired_interval(a, b, resamples=200)
