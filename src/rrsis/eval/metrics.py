"""Referring-segmentation metrics with the LAVT / RMSIN definitions, accumulated per sample.

For every sample ``I = |pred & gt|`` and ``U = |pred | gt|`` are counted and ``IoU = I / U``.
Over a split:

* ``oIoU`` = ``sum(I) / sum(U)`` (overall IoU: large objects weigh more),
* ``mIoU`` = mean of the per-sample IoU (every expression weighs the same),
* ``Pr@X`` = share of samples with ``IoU >= X`` for X in 0.5 ... 0.9,

all in percent, plus ``n`` (number of samples). Because the counts are kept per sample, the
result does not depend on how the data were batched.

A sample whose target and prediction are both empty has ``U = 0``. The reference test code
scores it as IoU 0 (it initialises IoU to 0 and only divides when ``U > 0``); that is our
default, so numbers stay comparable with published tables. ``empty_iou=1.0`` scores a
correctly empty prediction as perfect instead. See ``docs/protocol.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rrsis.eval.breakdown import GROUPINGS, UNKNOWN, sample_groups
from rrsis.eval.uncertainty import DEFAULT_RESAMPLES, bootstrap_interval, image_key

PR_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
METRIC_KEYS: tuple[str, ...] = (
    *(f"Pr@{t}" for t in PR_THRESHOLDS),
    "oIoU",
    "mIoU",
)

if TYPE_CHECKING:  # torch is only a type here: scoring saved masks needs no torch
    import torch

    ArrayLike = torch.Tensor | np.ndarray


def _as_bool_batch(array: ArrayLike, name: str) -> np.ndarray:
    """Convert a ``(B, H, W)`` tensor/array (bool or 0/1) to a numpy bool array."""
    if hasattr(array, "detach"):  # a torch tensor, possibly on a GPU
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name} must be (B, H, W), got shape {array.shape}")
    return array.astype(bool, copy=False)


def summarize(
    intersections: np.ndarray,
    unions: np.ndarray,
    empty_iou: float = 0.0,
) -> dict[str, float | int]:
    """Metrics of a set of samples from their per-sample counts.

    Args:
        intersections: ``(n,)`` foreground pixels in both prediction and target.
        unions: ``(n,)`` foreground pixels in either.
        empty_iou: IoU given to a sample with ``U = 0`` (both masks empty).

    Returns:
        ``{"Pr@0.5", ..., "Pr@0.9", "oIoU", "mIoU"}`` in percent and ``"n"``. With ``n = 0``
        every metric is 0. When ``sum(U) = 0`` (all samples empty) oIoU is ``100 * empty_iou``.
    """
    intersections = np.asarray(intersections, dtype=np.int64)
    unions = np.asarray(unions, dtype=np.int64)
    n = int(intersections.size)
    result: dict[str, float | int] = {key: 0.0 for key in METRIC_KEYS}
    result["n"] = n
    if n == 0:
        return result
    ious = per_sample_iou(intersections, unions, empty_iou)
    for threshold in PR_THRESHOLDS:
        result[f"Pr@{threshold}"] = 100.0 * float(np.mean(ious >= threshold))
    total_union = int(unions.sum())
    if total_union > 0:
        result["oIoU"] = 100.0 * int(intersections.sum()) / total_union
    else:
        result["oIoU"] = 100.0 * float(empty_iou)
    result["mIoU"] = 100.0 * float(ious.mean())
    return result


def per_sample_iou(
    intersections: np.ndarray, unions: np.ndarray, empty_iou: float = 0.0
) -> np.ndarray:
    """``(n,)`` float64 IoU per sample; ``empty_iou`` where ``U = 0``."""
    intersections = np.asarray(intersections, dtype=np.float64)
    unions = np.asarray(unions, dtype=np.float64)
    ious = np.full(unions.shape, float(empty_iou), dtype=np.float64)
    nonzero = unions > 0
    # Exact float64 division, so I/U = 3/5 compares equal to the threshold literal 0.6.
    ious[nonzero] = intersections[nonzero] / unions[nonzero]
    return ious


class RefSegMetrics:
    """Accumulates referring-segmentation metrics over batches of any size.

    Each :meth:`update` also records the sample's breakdown groups (object size, scatter,
    expression kind; see :mod:`rrsis.eval.breakdown`) so that :meth:`compute_breakdown` gives
    the same metrics per group.

    Args:
        empty_iou: IoU of a sample whose target and prediction are both empty. ``0.0`` (the
            default) follows the LAVT/RMSIN test code; ``1.0`` counts it as a perfect hit.

    Example:
        >>> metrics = RefSegMetrics()
        >>> metrics.update(pred, target)  # pred, target: bool (B, H, W)
        >>> metrics.compute()["mIoU"]
    """

    def __init__(self, empty_iou: float = 0.0) -> None:
        if not 0.0 <= empty_iou <= 1.0:
            raise ValueError(f"empty_iou must be in [0, 1], got {empty_iou}")
        self.empty_iou = float(empty_iou)
        self.reset()

    def reset(self) -> None:
        """Forget every sample seen so far."""
        self._intersections: list[int] = []
        self._unions: list[int] = []
        self._groups: list[dict[str, str]] = []
        self._ids: list[str | None] = []
        self._images: list[str] = []

    def __len__(self) -> int:
        return len(self._intersections)

    def update(
        self,
        pred: ArrayLike,
        target: ArrayLike,
        metas: Sequence[Mapping[str, Any]] | None = None,
        texts: Sequence[str] | None = None,
    ) -> None:
        """Add a batch of predictions.

        Args:
            pred: ``(B, H, W)`` bool (or 0/1) predicted masks.
            target: ``(B, H, W)`` bool (or 0/1) ground-truth masks, same shape as ``pred``.
            metas: optional ``B`` sample meta dicts. ``area_frac`` / ``n_components`` (object
                statistics of the ground truth at its own resolution), ``kind`` and ``id`` are
                used when present; missing statistics are computed from ``target``.
            texts: optional ``B`` expressions, used to infer the kind when a meta has none.
        """
        pred_np = _as_bool_batch(pred, "pred")
        target_np = _as_bool_batch(target, "target")
        if pred_np.shape != target_np.shape:
            raise ValueError(
                f"pred and target must have the same shape, got {pred_np.shape} and "
                f"{target_np.shape}"
            )
        batch = pred_np.shape[0]
        for name, values in (("metas", metas), ("texts", texts)):
            if values is not None and len(values) != batch:
                raise ValueError(f"{name} has {len(values)} entries for a batch of {batch}")
        flat_pred = pred_np.reshape(batch, -1)
        flat_target = target_np.reshape(batch, -1)
        intersections = np.logical_and(flat_pred, flat_target).sum(axis=1)
        unions = np.logical_or(flat_pred, flat_target).sum(axis=1)
        for i in range(batch):
            meta = dict(metas[i]) if metas is not None else {}
            text = texts[i] if texts is not None else None
            self._intersections.append(int(intersections[i]))
            self._unions.append(int(unions[i]))
            self._groups.append(sample_groups(meta, target_np[i], text))
            self._ids.append(None if meta.get("id") is None else str(meta["id"]))
            self._images.append(image_key(meta, self._ids[-1]))

    def compute(self) -> dict[str, float | int]:
        """Metrics over every sample so far: ``Pr@0.5 .. Pr@0.9``, ``oIoU``, ``mIoU`` (%), ``n``."""
        return summarize(np.asarray(self._intersections), np.asarray(self._unions), self.empty_iou)

    def interval(self, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
        """Bootstrap interval of mIoU and oIoU over the images seen so far.

        See :func:`rrsis.eval.uncertainty.bootstrap_interval`: whole images are resampled, with
        all their expressions.
        """
        return bootstrap_interval(
            self._intersections,
            self._unions,
            clusters=self._images,
            resamples=resamples,
            seed=seed,
            empty_iou=self.empty_iou,
        )

    def compute_breakdown(self) -> dict[str, dict[str, dict[str, float | int]]]:
        """The same metrics per group.

        Returns:
            ``{grouping: {group: metrics}}`` for the groupings of
            :data:`rrsis.eval.breakdown.GROUPINGS` (``size``, ``scatter``, ``components``,
            ``kind``, ``category``). Groups without samples are left out, and so is a
            dataset-specific grouping (``category``) where no sample has a known group.
        """
        intersections = np.asarray(self._intersections, dtype=np.int64)
        unions = np.asarray(self._unions, dtype=np.int64)
        result: dict[str, dict[str, dict[str, float | int]]] = {}
        for grouping, group_names in GROUPINGS.items():
            labels = np.asarray([groups[grouping] for groups in self._groups], dtype=object)
            present = set(labels.tolist())
            if not group_names and present <= {UNKNOWN}:
                continue
            per_group: dict[str, dict[str, float | int]] = {}
            # Known group names first, in their natural order, then the others sorted
            # (dataset-specific groupings), ``unknown`` last.
            extra = sorted(present - set(group_names), key=lambda n: (n == UNKNOWN, n))
            for name in (*group_names, *extra):
                selected = labels == name
                if selected.any():
                    per_group[name] = summarize(
                        intersections[selected], unions[selected], self.empty_iou
                    )
            result[grouping] = per_group
        return result

    def samples(self) -> list[dict[str, Any]]:
        """Per-sample records ``{"id", "image", "I", "U", "IoU", <grouping>: group}`` in update order.

        ``image`` is the key of the image the expression is about
        (:func:`rrsis.eval.uncertainty.image_key`), used to resample whole images.
        """
        ious = per_sample_iou(
            np.asarray(self._intersections), np.asarray(self._unions), self.empty_iou
        )
        return [
            {
                "id": sample_id,
                "image": image,
                "I": intersection,
                "U": union,
                "IoU": float(iou),
                **groups,
            }
            for sample_id, image, intersection, union, iou, groups in zip(
                self._ids, self._images, self._intersections, self._unions, ious, self._groups
            )
        ]
