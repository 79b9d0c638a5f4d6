"""How much a score would move on another draw of the data: bootstrap intervals and paired tests.

Referring-segmentation test splits are small (our Dubai test tile has 183 expressions, RefSegRS's
1,817), and expressions of one image are not independent: they share its pixels, and often its
targets. So the intervals here resample **images**, not expressions (a cluster bootstrap): every
expression of a drawn image comes with it. With one expression per image this is the plain
bootstrap.

* :func:`bootstrap_interval`: percentile interval of mIoU and oIoU of one result.
* :func:`paired_difference`: the difference ``B - A`` of two models scored on the same samples,
  with its interval and the share of resamples in which B is ahead. Pairing removes the
  between-image variance both models share, so it separates models that overlapping
  per-model intervals cannot.

Both measure the noise of the **sample of images** only. Training noise (another seed of the
same recipe) is not in them: on the Dubai data a second seed moved val mIoU by 1.4
(``docs/model-card.md``), so compare recipes on several seeds as well.

Example:
    >>> from rrsis.eval.uncertainty import paired_difference
    >>> diff = paired_difference(result_a["samples"], result_b["samples"])
    >>> diff["mIoU"]["delta"], diff["mIoU"]["interval"], diff["mIoU"]["p_b_ahead"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rrsis.errors import RRSISError

#: Resamples drawn unless told otherwise; the interval ends move by ~0.1 point between seeds.
DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


def image_key(meta: Mapping[str, Any], sample_id: str | None) -> str:
    """The image a sample's expression is about, for resampling whole images.

    RRSIS-D records its ``image_id``; our builder records the source part and crop position
    (``source``, ``crop_yx``); anything else (e.g. RefSegRS, which stores one image file per
    expression) counts each sample as its own image.
    """
    if meta.get("image_id") is not None:
        return f"image:{meta['image_id']}"
    if meta.get("source") is not None:
        crop = meta.get("crop_yx")
        suffix = "" if crop is None else "@" + ",".join(str(int(v)) for v in crop)
        return f"source:{meta['source']}{suffix}"
    return f"sample:{sample_id}"


def _check_resampling(resamples: int, level: float) -> None:
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}")
    if not 0.5 <= level < 1.0:
        raise ValueError(f"level must be in [0.5, 1), got {level}")


def _clusters(keys: Sequence[str]) -> tuple[np.ndarray, int]:
    """Index of each sample's cluster (in order of first appearance) and the cluster count."""
    index: dict[str, int] = {}
    labels = np.asarray([index.setdefault(key, len(index)) for key in keys], dtype=np.int64)
    return labels, len(index)


def _draw_counts(n_clusters: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n_clusters)`` times each cluster is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=resamples)


def _per_cluster(values: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    return np.bincount(labels, weights=values.astype(np.float64), minlength=n_clusters)


def _cluster_sums(
    inter: np.ndarray, union: np.ndarray, labels: np.ndarray, n_clusters: int, empty_iou: float
) -> list[np.ndarray]:
    """Per-cluster sums of IoU, sample count, intersection and union (what :func:`_scores` takes)."""
    values = (_ious(inter, union, empty_iou), np.ones_like(inter), inter, union)
    return [_per_cluster(v, labels, n_clusters) for v in values]


def _ious(intersections: np.ndarray, unions: np.ndarray, empty_iou: float) -> np.ndarray:
    ious = np.full(unions.shape, float(empty_iou), dtype=np.float64)
    nonzero = unions > 0
    ious[nonzero] = intersections[nonzero] / unions[nonzero]
    return ious


def _scores(
    counts: np.ndarray, iou_sum: np.ndarray, size: np.ndarray, inter: np.ndarray, union: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """mIoU and oIoU (percent) of every resample, from per-cluster sums."""
    miou = 100.0 * (counts @ iou_sum) / (counts @ size)
    total_union = counts @ union
    with np.errstate(invalid="ignore", divide="ignore"):
        oiou = np.where(total_union > 0, 100.0 * (counts @ inter) / total_union, np.nan)
    return miou, oiou


def _interval(values: np.ndarray, level: float) -> list[float]:
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.nanpercentile(values, [tail, 100.0 - tail])
    return [round(float(low), 2), round(float(high), 2)]


def bootstrap_interval(
    intersections: Sequence[int] | np.ndarray,
    unions: Sequence[int] | np.ndarray,
    clusters: Sequence[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    empty_iou: float = 0.0,
) -> dict[str, Any]:
    """Percentile bootstrap interval of mIoU and oIoU over images.

    Args:
        intersections, unions: per-sample pixel counts (as in
            :meth:`rrsis.eval.metrics.RefSegMetrics.samples`).
        clusters: per-sample image key (:func:`image_key`); ``None`` = every sample its own.
        resamples: bootstrap resamples.
        level: coverage of the interval (0.95 = 2.5th to 97.5th percentile).
        seed: seed of the resampling, so a result file can be reproduced.
        empty_iou: IoU of a sample whose masks are both empty (see ``rrsis.eval.metrics``).

    Returns:
        ``{"mIoU": [low, high], "oIoU": [low, high], "level", "resamples", "seed", "unit",
        "n_units"}``; ``unit`` is ``"image"`` when ``clusters`` group samples, else
        ``"expression"``.
    """
    _check_resampling(resamples, level)
    inter = np.asarray(intersections, dtype=np.float64)
    union = np.asarray(unions, dtype=np.float64)
    if inter.shape != union.shape or inter.ndim != 1:
        raise ValueError("intersections and unions must be 1-D and of the same length")
    if inter.size == 0:
        raise ValueError("no samples to resample")
    keys = list(clusters) if clusters is not None else [str(i) for i in range(inter.size)]
    if len(keys) != inter.size:
        raise ValueError(f"{len(keys)} cluster keys for {inter.size} samples")
    labels, n_clusters = _clusters(keys)
    sums = _cluster_sums(inter, union, labels, n_clusters, empty_iou)
    miou, oiou = _scores(_draw_counts(n_clusters, resamples, seed), *sums)
    return {
        "mIoU": _interval(miou, level),
        "oIoU": _interval(oiou, level),
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "unit": "image" if clusters is not None and n_clusters < inter.size else "expression",
        "n_units": n_clusters,
    }


def _by_id(records: Sequence[Mapping[str, Any]], name: str) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for record in records:
        sample_id = record.get("id")
        if sample_id is None:
            raise RRSISError(f"{name}: a per-sample record has no id; cannot pair the samples")
        if sample_id in out:
            raise RRSISError(f"{name}: sample id {sample_id!r} appears twice")
        out[str(sample_id)] = record
    return out


def paired_difference(
    samples_a: Sequence[Mapping[str, Any]],
    samples_b: Sequence[Mapping[str, Any]],
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    empty_iou: float = 0.0,
    subset: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``B - A`` in mIoU and oIoU over the samples both were scored on, resampling images.

    Args:
        samples_a, samples_b: per-sample records (``"id"``, ``"I"``, ``"U"``, optionally
            ``"image"`` and breakdown groups), e.g. the ``samples`` of two ``rrsis evaluate
            --out`` files. Both must hold the same ids: a comparison on different samples is
            refused.
        resamples, level, seed, empty_iou: as in :func:`bootstrap_interval`.
        subset: keep only samples whose records match, e.g. ``{"kind": "position"}``.

    Returns:
        ``{"n", "n_units", "unit", "level", "resamples", "seed", "mIoU": {...}, "oIoU": {...}}``
        where each metric holds ``a``, ``b``, ``delta`` (B - A, points), ``interval`` of the
        delta, and ``p_b_ahead``: the share of resamples in which B scores higher.
    """
    _check_resampling(resamples, level)
    a, b = _by_id(samples_a, "A"), _by_id(samples_b, "B")
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise RRSISError(
            f"the two results were scored on different samples ({len(only_a)} only in A, e.g. "
            f"{only_a[:1]}; {len(only_b)} only in B, e.g. {only_b[:1]}): score both models on "
            "the same split"
        )
    ids = sorted(a)
    if subset:
        ids = [i for i in ids if all(str(a[i].get(k)) == str(v) for k, v in subset.items())]
    if not ids:
        raise RRSISError(f"no samples match {dict(subset or {})}")
    keys = [str(a[i].get("image") or f"sample:{i}") for i in ids]
    labels, n_clusters = _clusters(keys)
    counts = _draw_counts(n_clusters, resamples, seed)
    result: dict[str, Any] = {
        "n": len(ids),
        "n_units": n_clusters,
        "unit": "image" if n_clusters < len(ids) else "expression",
        "level": level,
        "resamples": resamples,
        "seed": seed,
    }
    scores = {}
    for name, records in (("a", a), ("b", b)):
        inter = np.asarray([records[i]["I"] for i in ids], dtype=np.float64)
        union = np.asarray([records[i]["U"] for i in ids], dtype=np.float64)
        sums = _cluster_sums(inter, union, labels, n_clusters, empty_iou)
        scores[name] = (_scores(np.ones((1, n_clusters)), *sums), _scores(counts, *sums))
    for k, metric in enumerate(("mIoU", "oIoU")):
        point_a, point_b = float(scores["a"][0][k][0]), float(scores["b"][0][k][0])
        delta = scores["b"][1][k] - scores["a"][1][k]
        result[metric] = {
            "a": round(point_a, 2),
            "b": round(point_b, 2),
            "delta": round(point_b - point_a, 2),
            "interval": _interval(delta, level),
            "p_b_ahead": round(float(np.mean(delta[~np.isnan(delta)] > 0)), 4),
        }
    return result
