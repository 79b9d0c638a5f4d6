"""Evaluate a referring-segmentation model on a dataset split, overall and per breakdown group.

Two protocols (``docs/protocol.md``):

* ``native`` (default): the image is resized to the model's ``input_size`` square, the 2-class
  logits are resized back to the mask's own size (bilinear) and arg-maxed there, and the
  prediction is scored against the untouched ground truth. This is what a user of the model
  gets.
* ``lavt``: the published LAVT / RMSIN test protocol. The image is resized to 480x480, the
  logits are arg-maxed at 480x480 and the ground truth is resized to 480x480 with nearest
  neighbour; scoring happens at 480x480. Use it to compare with published tables.

``native`` resizes images like training and inference do (bilinear, ``align_corners=False``, no
anti-aliasing). ``lavt`` resizes the image and the ground truth with PIL, as the reference
loaders do (``torchvision.transforms.functional.resize`` on PIL images: bilinear, which
anti-aliases when shrinking and rounds to 8 bit, and NEAREST, whose fixed-point arithmetic picks
another source pixel than torch's ``nearest-exact`` in 28 of 480 rows and columns from 512 px).
Breakdown statistics (object size, scatter) always come from the ground truth at its own
resolution, whatever the protocol.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from rrsis.data.io import resize_mask
from rrsis.data.stats import object_stats
from rrsis.errors import ModelError, OutputExistsError
from rrsis.eval.metrics import RefSegMetrics, summarize
from rrsis.eval.uncertainty import DEFAULT_RESAMPLES
from rrsis.models.io import default_threshold

PROTOCOLS: tuple[str, ...] = ("native", "lavt")
#: Side of the square the LAVT protocol predicts and scores at.
LAVT_SIZE = 480
#: Seed of the expression permutation used by ``shuffle_expressions``.
SHUFFLE_SEED = 0

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def open_dataset(root: str | Path, split: str, data_format: str = "auto") -> Any:
    """Open ``split`` of a RefSegRS or RRSIS-D tree (``data_format="auto"`` detects which).

    Raises:
        DatasetError: missing root, unknown layout or split.
    """
    from rrsis.data.formats import detect_format

    root = Path(root)
    fmt = detect_format(root) if data_format == "auto" else data_format
    if fmt == "refsegrs":
        from rrsis.data.refsegrs import RefSegRS

        return RefSegRS(root, split)
    if fmt == "rrsisd":
        from rrsis.data.rrsisd import RRSISD

        return RRSISD(root, split)
    raise ValueError(f"unknown dataset format {data_format!r}")


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


def _all_texts(dataset: Any) -> list[str]:
    """Every expression of ``dataset`` in index order, without decoding pixels when possible."""
    expressions = getattr(dataset, "expressions", None)
    if isinstance(expressions, Sequence) and len(expressions) == len(dataset):
        return [str(text) for text in expressions]
    return [dataset[i]["text"] for i in range(len(dataset))]


def _images_to_input(
    images: Sequence[np.ndarray],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    pil: bool = False,
) -> Tensor:
    """Resize uint8 ``(H, W, 3)`` images to a normalised ``(B, 3, size, size)`` float batch.

    ``pil=True`` resizes with PIL's bilinear filter in 8 bit, as the LAVT / RMSIN loaders do
    (the ``lavt`` protocol); otherwise torch's bilinear, as our training and inference.
    """
    resized = []
    for image in images:
        if pil and image.shape[:2] != (size, size):
            image = np.asarray(
                Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BILINEAR)
            )
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        tensor = tensor / 255.0
        if tensor.shape[-2:] != (size, size):
            tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
        resized.append(tensor.clamp_(0.0, 1.0))
    batch = torch.cat(resized)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t


def _mask_at(logits: Tensor, size: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """Bilinear-resize ``(1, 2, h, w)`` logits to ``size``; foreground where its probability
    exceeds ``threshold`` (0.5: the arg-max, as in the paper): bool ``(H, W)``."""
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    if threshold == 0.5:
        return (logits.argmax(dim=1)[0] == 1).cpu().numpy()
    return (logits.softmax(dim=1)[0, 1] > threshold).cpu().numpy()


def _composed_mask(
    model: torch.nn.Module,
    image: Tensor,
    logits: Tensor,
    text: str,
    rules: Collection[str],
    size: tuple[int, int],
    threshold: float,
    pixels: np.ndarray | None,
) -> np.ndarray | None:
    """The mask of ``text`` read by the composition rules, or ``None`` when none applies.

    ``image`` is the model input ``(1, 3, s, s)``, ``logits`` the network's ``(1, 2, h, w)``
    for the whole expression; other texts (the subject, the relation's object) get their own
    forward pass. ``pixels`` (uint8 at ``size``) serves colour attributes.
    """
    from rrsis.infer.compose import compose_probability, parse_expression

    composition = parse_expression(text, rules)
    if composition is None:
        return None

    def to_prob(out: Tensor) -> np.ndarray:
        out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
        return out.softmax(dim=1)[0, 1].cpu().numpy()

    cache = {text: to_prob(logits)}

    def probability(t: str) -> np.ndarray:
        if t not in cache:
            word_ids, word_mask = model.tokenize([t])
            device = image.device
            cache[t] = to_prob(model(image, word_ids.to(device), word_mask.to(device)))
        return cache[t]

    prob = compose_probability(
        composition, probability, threshold, image=pixels, fallback=cache[text]
    )
    return prob > threshold


def model_threshold(model: torch.nn.Module, threshold: float | None = None) -> float:
    """``threshold``, else the model's recommended one (:func:`rrsis.models.io.default_threshold`)."""
    value = default_threshold(model) if threshold is None else float(threshold)
    if not 0.0 < value < 1.0:
        raise ModelError(f"threshold must be in (0, 1), got {value}")
    return value


def _prediction_path(directory: Path, sample_id: str) -> Path:
    # Ids become file names: anything outside a safe set (path separators included) is "_".
    return directory / f"{_UNSAFE_FILENAME.sub('_', sample_id)}.png"


def _prepare_prediction_dir(directory: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise OutputExistsError(f"{directory}: exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{directory}: prediction directory is not empty (pass overwrite=True / --overwrite)"
        )
    directory.mkdir(parents=True, exist_ok=True)


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
    compose: Collection[str] | str | None = None,
) -> dict[str, Any]:
    """Predict every sample of ``dataset`` and score it.

    Args:
        model: an :class:`rrsis.models.base.RRSISModel` (``tokenize``, ``input_size``, ``mean``,
            ``std``, ``size_divisor``; forward gives ``(B, 2, H, W)`` logits).
        dataset: map-style dataset of contract samples (``image`` uint8 ``(H, W, 3)``, ``mask``
            bool ``(H, W)``, ``text``, ``id``, ``meta``).
        protocol: ``"native"`` or ``"lavt"`` (see the module docstring).
        batch_size: samples per forward pass.
        save_predictions: directory receiving one ``<id>.png`` (0/255) per sample, at the
            resolution it was scored at (mask size for native, 480x480 for lavt).
        device: torch device to run the model on.
        shuffle_expressions: give each sample another sample's expression (fixed seed, no
            sample keeps its own): a model that reads the text must score much lower.
        empty_iou: IoU of a sample whose target and prediction are both empty (see
            :class:`rrsis.eval.metrics.RefSegMetrics`).
        progress: show a tqdm progress bar.
        overwrite: allow ``save_predictions`` to be a non-empty directory.
        input_size: square side of the native protocol's input; ``None`` = ``model.input_size``.
            Pass the size a model was trained at when it differs from its default.
        threshold: foreground-probability cut; ``None`` = the model's
            ``recommended_threshold`` if it has one, else 0.5 (the arg-max of the paper).
        resamples: bootstrap resamples of the 95 % interval of the overall mIoU and oIoU
            (whole images resampled, :mod:`rrsis.eval.uncertainty`); 0 = no interval.
        compose: geometry rules that read position / relation / attribute phrases
            (:mod:`rrsis.infer.compose`; ``"all"``, ``"none"`` or a comma list); ``None`` =
            none, the network alone. The rules run at the scoring resolution.

    Returns:
        ``{"protocol", "input_size", "threshold", "n", "overall": metrics, "interval": {"mIoU":
        [low, high], "oIoU": [low, high], ...} or None, "breakdown": {grouping: {group:
        metrics}}, "samples": [per-sample records], "shuffle_expressions", "empty_iou",
        "model": model config, "seconds"}``; metrics in percent as in
        :meth:`RefSegMetrics.compute`.

    Raises:
        ValueError: unknown protocol or batch size below 1.
        ModelError: the protocol's input size is not a multiple of the model's size divisor.
        OutputExistsError: ``save_predictions`` is a non-empty directory and not ``overwrite``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if protocol == "lavt":
        input_size = LAVT_SIZE
    else:
        input_size = int(input_size if input_size is not None else model.input_size)
    divisor = int(getattr(model, "size_divisor", 1) or 1)
    if input_size % divisor:
        raise ModelError(
            f"protocol {protocol!r} feeds {input_size}x{input_size} images but the model needs "
            f"multiples of {divisor}"
        )
    threshold = model_threshold(model, threshold)
    from rrsis.infer.compose import parse_rules

    rules = parse_rules(compose)
    prediction_dir = None if save_predictions is None else Path(save_predictions)
    if prediction_dir is not None:
        _prepare_prediction_dir(prediction_dir, overwrite)

    n = len(dataset)
    texts_in = None
    if shuffle_expressions:
        all_texts = _all_texts(dataset)
        texts_in = [all_texts[j] for j in shuffled_order(n)]

    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    metrics = RefSegMetrics(empty_iou=empty_iou)
    start = time.perf_counter()
    bar = tqdm(total=n, desc=f"evaluate ({protocol})", unit="sample", disable=not progress)
    try:
        for first in range(0, n, batch_size):
            indices = range(first, min(first + batch_size, n))
            samples = [dataset[i] for i in indices]
            own_texts = [s["text"] for s in samples]
            fed_texts = own_texts if texts_in is None else [texts_in[i] for i in indices]
            images = _images_to_input(
                [s["image"] for s in samples],
                input_size,
                model.mean,
                model.std,
                pil=protocol == "lavt",
            )
            word_ids, word_mask = model.tokenize(list(fed_texts))
            logits = model(images.to(device), word_ids.to(device), word_mask.to(device)).float()
            for k, sample in enumerate(samples):
                mask = np.asarray(sample["mask"], dtype=bool)
                meta = dict(sample.get("meta") or {})
                # Breakdown statistics from the full-resolution ground truth, whatever the protocol.
                meta.update(object_stats(mask))
                meta["id"] = sample["id"]
                if protocol == "native":
                    target = mask
                else:
                    target = resize_mask(mask, LAVT_SIZE, LAVT_SIZE)
                pred = None
                if rules:
                    pred = _composed_mask(
                        model,
                        images[k : k + 1].to(device),
                        logits[k : k + 1],
                        fed_texts[k],
                        rules,
                        target.shape,
                        threshold,
                        sample["image"] if protocol == "native" else None,
                    )
                if pred is None:
                    pred = _mask_at(logits[k : k + 1], target.shape, threshold)
                # Native masks may differ in size across samples: score one sample at a time.
                metrics.update(pred[None], target[None], metas=[meta], texts=[own_texts[k]])
                if prediction_dir is not None:
                    image = Image.fromarray(pred.astype(np.uint8) * 255)
                    image.save(_prediction_path(prediction_dir, str(sample["id"])))
            bar.update(len(samples))
    finally:
        bar.close()
        model.train(was_training)
    seconds = time.perf_counter() - start
    return {
        "protocol": protocol,
        "input_size": input_size,
        "threshold": threshold,
        "n": len(metrics),
        "overall": metrics.compute(),
        "interval": metrics.interval(resamples) if resamples and len(metrics) else None,
        "breakdown": metrics.compute_breakdown(),
        "samples": metrics.samples(),
        "shuffle_expressions": bool(shuffle_expressions),
        "empty_iou": float(empty_iou),
        "compose": sorted(rules),
        "model": dict(getattr(model, "config", {}) or {}),
        "seconds": seconds,
    }


@torch.inference_mode()
def sweep_thresholds(
    model: torch.nn.Module,
    dataset: Any,
    thresholds: Sequence[float],
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    progress: bool = False,
) -> dict[float, dict[str, float]]:
    """The metrics (percent, native protocol) of ``dataset`` at several foreground thresholds.

    One forward pass per sample serves every threshold. Meant for choosing a model's
    ``recommended_threshold`` on a **validation** split; never sweep on test.

    Returns:
        ``{threshold: metrics}`` in the order given, metrics as :func:`~rrsis.eval.metrics.summarize`
        (``"mIoU"``, ``"oIoU"``, ``"Pr@0.5"``, ..., ``"n"``).
    """
    size = int(input_size if input_size is not None else model.input_size)
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    inter = {t: [] for t in thresholds}
    union = {t: [] for t in thresholds}
    try:
        for first in tqdm(range(0, len(dataset), batch_size), disable=not progress, unit="batch"):
            samples = [dataset[i] for i in range(first, min(first + batch_size, len(dataset)))]
            images = _images_to_input([s["image"] for s in samples], size, model.mean, model.std)
            word_ids, word_mask = model.tokenize([s["text"] for s in samples])
            logits = model(images.to(device), word_ids.to(device), word_mask.to(device)).float()
            for k, sample in enumerate(samples):
                target = torch.from_numpy(np.asarray(sample["mask"], dtype=bool)).to(device)
                prob = F.interpolate(
                    logits[k : k + 1], size=target.shape, mode="bilinear", align_corners=False
                ).softmax(1)[0, 1]
                for t in thresholds:
                    pred = prob > t
                    inter[t].append(int((pred & target).sum()))
                    union[t].append(int((pred | target).sum()))
    finally:
        model.train(was_training)
    return {t: summarize(inter[t], union[t]) for t in thresholds}


#: The thresholds :func:`best_threshold` chooses from: 0.05, 0.10, ..., 0.95.
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


def best_threshold(sweep: dict[float, dict[str, float]]) -> float:
    """The threshold of a :func:`sweep_thresholds` result with the best mIoU.

    mIoU is compared at two decimals; ties go to the threshold nearest 0.5 (the arg-max).
    This is the rule the shipped model's threshold was chosen by (on the validation tile).
    """
    return max(sweep, key=lambda t: (round(sweep[t]["mIoU"], 2), -abs(t - 0.5)))
