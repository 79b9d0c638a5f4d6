"""Intervals over test images and training seeds: one model's mIoU, or two models' difference.

A benchmark trains every model with several seeds and scores each run on the same test split.
Two sources of noise then move a model's mIoU: which images the test split happens to hold,
and which seed trained the model. The intervals here resample both, in one two-level
bootstrap:

* the **images** (every expression of a drawn image comes with it, as in
  :mod:`rrsis.eval.uncertainty`), drawn once per resample and shared by every model, so a
  difference is paired: both models are scored on the same draw;
* the **runs** of each model (its seeds), drawn with replacement per resample. Runs of one
  seed see the same data order and augmentation whatever the model, so two models trained
  with the same seeds share the draw (seed k of A is compared with seed k of B); models with
  different numbers of runs draw theirs independently.

The statistic of a resample is the mean over the drawn runs of the mIoU on the drawn images
(for a difference: model B's mean minus the reference A's mean). With one run per model the
second level does nothing and the interval is the paired image bootstrap.

Example:
    >>> from rrsis.eval.paired import SeedRuns, paired_interval
    >>> ref = SeedRuns.from_samples([lavt_seed0["samples"], lavt_seed1["samples"]])
    >>> new = SeedRuns.from_samples([lgce_seed0["samples"], lgce_seed1["samples"]])
    >>> paired_interval(ref, new, subset={"size": "small"})  # {"delta", "interval", ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rrsis.errors import RRSISError
from rrsis.eval.uncertainty import DEFAULT_LEVEL, DEFAULT_RESAMPLES


@dataclass(frozen=True)
class SeedRuns:
    """Per-sample IoU of one model's runs on one split, aligned on sample ids.

    Attributes:
        ids: sample ids, sorted.
        images: the image key of each sample (resampling unit).
        groups: ``{grouping: group of each sample}`` (``size``, ``scatter``, ...).
        iou: ``(runs, samples)`` IoU in [0, 1].
    """

    ids: tuple[str, ...]
    images: tuple[str, ...]
    groups: Mapping[str, tuple[str, ...]]
    iou: np.ndarray

    @classmethod
    def from_samples(cls, runs: Sequence[Sequence[Mapping[str, Any]]]) -> SeedRuns:
        """Build from the ``samples`` records of each run (:meth:`RefSegMetrics.samples`).

        Raises:
            RRSISError: no run, a record without id, or runs scored on different samples.
        """
        if not runs:
            raise RRSISError("a model needs at least one scored run")
        by_id = []
        for k, records in enumerate(runs):
            table = {}
            for record in records:
                if record.get("id") is None:
                    raise RRSISError(f"run {k}: a per-sample record has no id")
                table[str(record["id"])] = record
            by_id.append(table)
        ids = tuple(sorted(by_id[0]))
        for k, table in enumerate(by_id[1:], start=1):
            if set(table) != set(ids):
                raise RRSISError(f"run {k} was scored on other samples than run 0")
        first = by_id[0]
        images = tuple(str(first[i].get("image") or f"sample:{i}") for i in ids)
        names = [key for key in ("size", "scatter", "components", "kind") if key in first[ids[0]]]
        groups = {key: tuple(str(first[i].get(key)) for i in ids) for key in names}
        iou = np.asarray([[float(table[i]["IoU"]) for i in ids] for table in by_id])
        return cls(ids=ids, images=images, groups=groups, iou=iou)

    @property
    def runs(self) -> int:
        return int(self.iou.shape[0])


def _check(resamples: int, level: float) -> None:
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}")
    if not 0.5 <= level < 1.0:
        raise ValueError(f"level must be in [0.5, 1), got {level}")


def _selection(runs: SeedRuns, subset: Mapping[str, str] | None) -> np.ndarray:
    keep = np.ones(len(runs.ids), dtype=bool)
    for grouping, group in (subset or {}).items():
        if grouping not in runs.groups:
            raise RRSISError(f"the per-sample records have no {grouping!r} grouping")
        keep &= np.asarray([g == str(group) for g in runs.groups[grouping]])
    return keep


def _run_draws(rng: np.random.Generator, runs: int, resamples: int) -> np.ndarray:
    """``(resamples, runs)`` weights: how often each run is drawn, divided by ``runs``."""
    if runs == 1:
        return np.ones((resamples, 1))
    return rng.multinomial(runs, np.full(runs, 1.0 / runs), size=resamples) / runs


def _interval(values: np.ndarray, level: float) -> list[float]:
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return [round(float(low), 2), round(float(high), 2)]


def paired_interval(
    reference: SeedRuns | None,
    model: SeedRuns,
    subset: Mapping[str, str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """mIoU of ``model`` minus ``reference`` (or of ``model`` alone) with its bootstrap interval.

    Args:
        reference: runs of the reference model A; ``None`` gives ``model``'s own mIoU and its
            interval (the same bootstrap, without the subtraction).
        model: runs of model B, scored on the same samples as ``reference``.
        subset: keep only samples of these groups, e.g. ``{"size": "small"}``.
        resamples: bootstrap resamples.
        level: coverage of the interval (0.95: 2.5th to 97.5th percentile).
        seed: seed of the resampling (a result file is reproducible).

    Returns:
        ``{"n", "n_images", "runs": [runs of A, runs of B], "a", "b", "delta", "interval",
        "p_b_ahead", "level", "resamples", "seed"}``: mean mIoU over runs (percent) of A and
        B, the difference (B - A; B's mIoU when there is no reference), its interval, and the
        share of resamples in which B is ahead. ``n = 0`` (no sample in the subset) gives
        ``None`` for every number.

    Raises:
        RRSISError: the two models were scored on different samples.
    """
    _check(resamples, level)
    if reference is not None and reference.ids != model.ids:
        raise RRSISError("the two models were scored on different samples: use one split")
    keep = _selection(model, subset)
    runs = [0 if reference is None else reference.runs, model.runs]
    result: dict[str, Any] = {
        "n": int(keep.sum()),
        "runs": runs,
        "level": level,
        "resamples": resamples,
        "seed": seed,
    }
    if not keep.any():
        none = dict.fromkeys(("n_images", "a", "b", "delta", "interval", "p_b_ahead"))
        return {**result, **none}
    images = [image for image, k in zip(model.images, keep) if k]
    index: dict[str, int] = {}
    labels = np.asarray([index.setdefault(image, len(index)) for image in images])
    n_images = len(index)
    size = np.bincount(labels, minlength=n_images).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=resamples)
    denominator = draws @ size

    # Runs of one seed share their data order and augmentation across models, so with the
    # same seeds the runs are paired too: one draw of seeds serves both models.
    shared = None
    if reference is not None and reference.runs == model.runs:
        shared = _run_draws(rng, model.runs, resamples)

    def per_run(runs_of: SeedRuns) -> tuple[float, np.ndarray]:
        """Point mean mIoU over runs, and the ``(resamples,)`` bootstrap statistic."""
        sums = np.stack(
            [np.bincount(labels, weights=r[keep], minlength=n_images) for r in runs_of.iou]
        )
        point = float(np.mean(sums.sum(axis=1) / size.sum()))
        scores = (draws @ sums.T) / denominator[:, None]  # (resamples, runs)
        weights = shared if shared is not None else _run_draws(rng, runs_of.runs, resamples)
        return 100.0 * point, 100.0 * (scores * weights).sum(axis=1)

    point_b, boot_b = per_run(model)
    point_a, boot_a = (0.0, np.zeros(resamples)) if reference is None else per_run(reference)
    delta = boot_b - boot_a
    result.update(
        {
            "n_images": n_images,
            "a": None if reference is None else round(point_a, 2),
            "b": round(point_b, 2),
            "delta": round(point_b - point_a, 2),
            "interval": _interval(delta, level),
            "p_b_ahead": None if reference is None else round(float(np.mean(delta > 0)), 4),
        }
    )
    return result
