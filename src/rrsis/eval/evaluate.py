"""Evaluate a referring-segmentation model on a dataset split, overall and per breakdown group.

Every prediction comes from :class:`rrsis.infer.predictor.Segmenter` (its
:meth:`~rrsis.infer.predictor.Segmenter.predict_pairs`), the forward path ``rrsis predict``
uses: the image is resized whole to the input size (no windows), the foreground probabilities
are resized back and cut at the Segmenter's threshold, and the composition rules
(:mod:`rrsis.infer.compose`) read position, relation and attribute phrases.

One run scores two things side by side: the **network alone** (each whole expression read by the
network; what compares with published methods) and, unless ``compose="none"``, the **composed**
masks (what ``rrsis predict`` gives). A pair is forwarded a second time only where a rule
decided its mask; elsewhere both scores share the network's prediction.

Two protocols (``docs/protocol.md``):

* ``native`` (default): predicted at the image's own size and scored against the untouched
  ground truth. This is what a user of the model gets.
* ``lavt``: the published LAVT / RMSIN test protocol. The image is resized to 480x480 with PIL's
  bilinear filter (which anti-aliases when shrinking and rounds to 8 bit) and predicted at
  480x480; the ground truth is resized to 480x480 with PIL's NEAREST (whose fixed-point
  arithmetic picks another source pixel than torch's ``nearest-exact`` in 28 of 480 rows and
  columns from 512 px), as the reference loaders do. Use it to compare with published tables.

Breakdown statistics (object size, scatter) always come from the ground truth at its own
resolution, whatever the protocol.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from rrsis.data.formats import detect_format, require_samples
from rrsis.data.io import resize_mask
from rrsis.data.refsegrs import RefSegRS
from rrsis.data.rrsisd import RRSISD
from rrsis.data.stats import object_stats
from rrsis.errors import DatasetError, DataWarning
from rrsis.eval.metrics import RefSegMetrics
from rrsis.eval.predictions import PredictionWriter
from rrsis.eval.uncertainty import DEFAULT_RESAMPLES
from rrsis.infer.compose import parse_rules
from rrsis.infer.predictor import Segmenter

PROTOCOLS: tuple[str, ...] = ("native", "lavt")
#: Side of the square the LAVT protocol predicts and scores at.
LAVT_SIZE = 480
#: Seed of the expression permutation used by ``shuffle_expressions``.
SHUFFLE_SEED = 0
#: What ``decided_by`` says of a mask the network produced (as ``Segmenter.predict_pairs``).
NETWORK = "network"


def open_dataset(root: str | Path, split: str, data_format: str = "auto") -> Any:
    """Open ``split`` of a RefSegRS or RRSIS-D tree (``data_format="auto"`` detects which).

    Raises:
        DatasetError: missing root, unknown layout or split, or a split without samples
            (naming its phrase or refs file).
    """
    root = Path(root)
    fmt = detect_format(root) if data_format == "auto" else data_format
    if fmt == "refsegrs":
        dataset = RefSegRS(root, split)
    elif fmt == "rrsisd":
        dataset = RRSISD(root, split)
    else:
        raise ValueError(f"unknown dataset format {data_format!r}")
    require_samples(dataset)
    return dataset


@contextmanager
def recorded_data_warnings() -> Iterator[list[str]]:
    """Collect the message of every :class:`DataWarning` raised inside into the list yielded.

    Every warning is passed on when the block ends, through the caller's filters: a result
    records that its ground truth was repaired even where warnings are silenced.
    """
    notes: list[str] = []
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            yield notes
    finally:
        for item in caught:
            if issubclass(item.category, DataWarning):
                notes.append(str(item.message))
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def shuffled_order(n: int, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """A fixed-seed permutation of ``range(n)`` without fixed points (for ``n >= 2``).

    Sample ``i`` receives the expression of sample ``order[i]``. Following a random cycle
    guarantees that no sample keeps its own expression, so the check measures how much the
    model depends on the text rather than on how many expressions happened to stay in place.
    """
    if n < 2:
        return np.arange(n)
    cycle = np.random.default_rng(seed).permutation(n)
    order = np.empty(n, dtype=np.int64)
    order[cycle] = np.roll(cycle, -1)
    return order


def all_texts(dataset: Any) -> list[str]:
    """Every expression of ``dataset`` in index order, without decoding pixels when possible."""
    expressions = getattr(dataset, "expressions", None)
    if isinstance(expressions, Sequence) and len(expressions) == len(dataset):
        return [str(text) for text in expressions]
    return [dataset[i]["text"] for i in range(len(dataset))]


def size_batches(dataset: Any, batch_size: int) -> Iterator[list[tuple[int, dict]]]:
    """``(index, sample)`` lists of at most ``batch_size`` consecutive samples of one image size.

    ``Segmenter.predict_pairs`` takes images of one size; a sample whose image differs in size
    from the one before starts a new batch.
    """
    batch: list[tuple[int, dict]] = []
    for index in range(len(dataset)):
        sample = dataset[index]
        shape = np.shape(sample["image"])
        if batch and (len(batch) == batch_size or np.shape(batch[0][1]["image"]) != shape):
            yield batch
            batch = []
        batch.append((index, sample))
    if batch:
        yield batch


def protocol_inputs(sample: dict, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 ``(H, W, 3)`` image to predict and the bool ``(H, W)`` mask to score against."""
    image = np.ascontiguousarray(sample["image"], dtype=np.uint8)
    mask = np.asarray(sample["mask"], dtype=bool)
    if protocol == "lavt":
        if image.shape[:2] != (LAVT_SIZE, LAVT_SIZE):
            size = (LAVT_SIZE, LAVT_SIZE)
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        return image, resize_mask(mask, LAVT_SIZE, LAVT_SIZE)
    if image.shape[:2] != mask.shape:
        raise DatasetError(
            f"sample {sample.get('id')!r}: image is {image.shape[1]}x{image.shape[0]} px but its "
            f"mask {mask.shape[1]}x{mask.shape[0]} px"
        )
    return image, mask


def _scores(metrics: RefSegMetrics, resamples: int) -> dict[str, Any]:
    return {
        "overall": metrics.compute(),
        "interval": metrics.interval(resamples) if resamples and len(metrics) else None,
        "breakdown": metrics.compute_breakdown(),
        "samples": metrics.samples(),
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    protocol: str = "native",
    batch_size: int = 8,
    save_predictions: str | Path | None = None,
    device: str | torch.device = "cpu",
    shuffle_expressions: bool = False,
    empty_iou: float = 0.0,
    progress: bool = True,
    overwrite: bool = False,
    input_size: int | None = None,
    threshold: float | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    compose: Collection[str] | str | None = "all",
    backend: str = "torch",
    onnx: str | Path | None = None,
) -> dict[str, Any]:
    """Predict every sample of ``dataset`` and score the network alone and with the rules.

    Args:
        model: an :class:`rrsis.models.base.RRSISModel` (``tokenize``, ``input_size``, ``mean``,
            ``std``, ``size_divisor``; forward gives ``(B, 2, H, W)`` logits).
        dataset: map-style dataset of contract samples (``image`` uint8 ``(H, W, 3)``, ``mask``
            bool ``(H, W)``, ``text``, ``id``, ``meta``).
        protocol: ``"native"`` or ``"lavt"`` (see the module docstring).
        batch_size: pairs per forward pass (consecutive samples of one image size).
        save_predictions: directory receiving the masks at the resolution they were scored at
            (:mod:`rrsis.eval.predictions`: ``<id>.png`` the network alone, ``composed/<id>.png``
            with the rules).
        device: torch device to run the model on.
        shuffle_expressions: give each sample another sample's expression (fixed seed, no
            sample keeps its own): a model that reads the text must score much lower.
        empty_iou: IoU of a sample whose target and prediction are both empty (see
            :class:`rrsis.eval.metrics.RefSegMetrics`).
        progress: show a tqdm progress bar.
        overwrite: allow ``save_predictions`` to be a non-empty directory.
        input_size: square side of the native protocol's input; ``None`` = ``model.input_size``.
            Pass the size a model was trained at when it differs from its default.
        threshold: foreground-probability cut; ``None`` = the model's ``recommended_threshold``
            if it has one, else 0.5 (the arg-max of the paper). Checked by the Segmenter.
        resamples: bootstrap resamples of the 95 % interval of the overall mIoU and oIoU
            (whole images resampled, :mod:`rrsis.eval.uncertainty`); 0 = no interval.
        compose: the rules of the composed scores (``"all"``, ``"none"`` or a comma list of
            ``position``, ``relation``, ``attribute``); ``"none"`` scores the network alone only.
        backend: ``"torch"`` or ``"onnxruntime"``; ``onnx``: with the latter, a graph file of
            ``model`` (see :class:`~rrsis.infer.predictor.Segmenter`).

    Returns:
        ``{"protocol", "input_size", "threshold", "n", "overall", "interval", "breakdown",
        "samples", "composed", "shuffle_expressions", "empty_iou", "model", "data_warnings",
        "seconds"}``. ``data_warnings`` lists the :class:`~rrsis.errors.DataWarning` messages
        the dataset raised (e.g. masks resized to their images), also passed on as warnings.
        ``overall`` / ``interval`` / ``breakdown`` / ``samples`` are the **network alone**:
        metrics in percent as :meth:`RefSegMetrics.compute`, the bootstrap interval
        (``{"mIoU": [low, high], "oIoU": [...], ...}`` or ``None``), ``{grouping: {group:
        metrics}}`` and the per-sample records. ``composed`` is ``None`` without rules, else the
        same four keys with the rules, plus ``"rules"`` (sorted names), ``"decided_by"``
        (``{"network" | rule: samples}``) and a ``"decided_by"`` in each sample record.

    Raises:
        ValueError: unknown protocol or rule, or batch size below 1.
        ModelError: an input size that is not a multiple of the model's size divisor, or a
            threshold outside [0, 1].
        DatasetError: an empty dataset (naming its phrase or refs file), or a sample whose
            image and mask differ in size (native protocol).
        OutputExistsError: ``save_predictions`` is a non-empty directory and not ``overwrite``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # Before any output exists: no samples would score 0.00 and look like a result.
    require_samples(dataset)
    rules = parse_rules(compose)
    was_training = model.training
    segmenter = Segmenter(
        model,
        device=device,
        input_size=LAVT_SIZE if protocol == "lavt" else input_size,
        threshold=threshold,
        compose=rules,
        # Whole images, never windows: an overlap of 0 suits whatever window the model records.
        tiling="never",
        window_overlap=0,
        backend=backend,
        onnx=onnx,
    )
    segmenter.network.max_rows = batch_size  # pairs per forward pass
    writer = None
    if save_predictions is not None:
        writer = PredictionWriter(save_predictions, overwrite, composed=bool(rules))

    n = len(dataset)
    texts_in = None
    if shuffle_expressions:
        texts = all_texts(dataset)
        texts_in = [texts[j] for j in shuffled_order(n)]

    network = RefSegMetrics(empty_iou=empty_iou)
    composed = RefSegMetrics(empty_iou=empty_iou)
    decided_by: list[str] = []
    cut = segmenter.threshold
    start = time.perf_counter()
    bar = tqdm(total=n, desc=f"evaluate ({protocol})", unit="sample", disable=not progress)
    with recorded_data_warnings() as data_warnings:
        try:
            for batch in size_batches(dataset, batch_size):
                samples = [sample for _, sample in batch]
                inputs = [protocol_inputs(sample, protocol) for sample in samples]
                images = np.stack([image for image, _ in inputs])
                if texts_in is None:
                    texts = [sample["text"] for sample in samples]
                else:
                    texts = [texts_in[index] for index, _ in batch]
                probs, decided = segmenter.predict_pairs(images, texts, rules=rules)
                alone = probs
                # Only where a rule decided does the network alone predict something else.
                redo = [k for k, by in enumerate(decided) if by != NETWORK]
                if redo:
                    alone = probs.copy()
                    alone[redo] = segmenter.predict_pairs(
                        images[redo], [texts[k] for k in redo], rules=()
                    )[0]
                for k, (sample, (_, target)) in enumerate(zip(samples, inputs)):
                    meta = dict(sample.get("meta") or {})
                    # Breakdown statistics from the full-resolution ground truth, any protocol.
                    meta.update(object_stats(np.asarray(sample["mask"], dtype=bool)))
                    meta["id"] = sample["id"]
                    # Masks may differ in size across samples: score one sample at a time.
                    pred = alone[k] > cut
                    network.update(pred[None], target[None], metas=[meta], texts=[sample["text"]])
                    composed_pred = probs[k] > cut
                    if rules:
                        composed.update(
                            composed_pred[None], target[None], metas=[meta], texts=[sample["text"]]
                        )
                        decided_by.append(decided[k])
                    if writer is not None:
                        writer.write(str(sample["id"]), pred, composed_pred)
                bar.update(len(samples))
        finally:
            bar.close()
            model.train(was_training)
    result: dict[str, Any] = {
        "protocol": protocol,
        "input_size": segmenter.input_size,
        "threshold": cut,
        "n": len(network),
        **_scores(network, resamples),
        "composed": None,
        "shuffle_expressions": bool(shuffle_expressions),
        "empty_iou": float(empty_iou),
        "model": dict(getattr(model, "config", {}) or {}),
        "backend": backend,
        "data_warnings": data_warnings,
    }
    if rules:
        scores = _scores(composed, resamples)
        for record, by in zip(scores["samples"], decided_by):
            record["decided_by"] = by
        counts = Counter(decided_by)
        result["composed"] = {
            "rules": sorted(rules),
            "decided_by": {by: counts[by] for by in (NETWORK, *sorted(rules))},
            **scores,
        }
    result["seconds"] = time.perf_counter() - start
    return result
