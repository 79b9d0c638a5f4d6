"""Choosing a model's foreground threshold on a validation split (``rrsis calibrate``).

The probabilities come from :class:`rrsis.infer.predictor.Segmenter`, as in
:func:`rrsis.eval.evaluate.evaluate` (native protocol, the network alone): one forward pass per
sample serves every threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rrsis.data.formats import require_samples
from rrsis.eval.evaluate import protocol_inputs, size_batches
from rrsis.eval.metrics import summarize
from rrsis.infer.predictor import Segmenter

#: The thresholds :func:`best_threshold` chooses from: 0.05, 0.10, ..., 0.95.
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


def sweep_thresholds(
    model: torch.nn.Module,
    dataset: Any,
    thresholds: Sequence[float],
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    progress: bool = False,
) -> dict[float, dict[str, float]]:
    """The metrics (percent, native protocol, network alone) of ``dataset`` at several thresholds.

    Meant for choosing a model's ``recommended_threshold`` on a **validation** split; never
    sweep on test.

    Returns:
        ``{threshold: metrics}`` in the order given, metrics as :func:`~rrsis.eval.metrics.summarize`
        (``"mIoU"``, ``"oIoU"``, ``"Pr@0.5"``, ..., ``"n"``).

    Raises:
        DatasetError: an empty dataset (no threshold is better than another on no samples).
    """
    require_samples(dataset)
    was_training = model.training
    segmenter = Segmenter(
        model,
        device=device,
        input_size=input_size,
        compose="none",
        tiling="never",
        window_overlap=0,
    )
    segmenter.network.max_rows = batch_size  # pairs per forward pass
    inter: dict[float, list[int]] = {t: [] for t in thresholds}
    union: dict[float, list[int]] = {t: [] for t in thresholds}
    bar = tqdm(total=len(dataset), disable=not progress, unit="sample")
    try:
        for batch in size_batches(dataset, batch_size):
            inputs = [protocol_inputs(sample, "native") for _, sample in batch]
            images = np.stack([image for image, _ in inputs])
            probs, _ = segmenter.predict_pairs(images, [s["text"] for _, s in batch], rules=())
            for prob, (_, target) in zip(probs, inputs):
                for t in thresholds:
                    pred = prob > t
                    inter[t].append(int((pred & target).sum()))
                    union[t].append(int((pred | target).sum()))
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return {t: summarize(inter[t], union[t]) for t in thresholds}


def best_threshold(sweep: dict[float, dict[str, float]]) -> float:
    """The threshold of a :func:`sweep_thresholds` result with the best mIoU.

    mIoU is compared at two decimals; ties go to the threshold nearest 0.5 (the arg-max).
    This is the rule the shipped model's threshold was chosen by (on the validation tile).
    """
    return max(sweep, key=lambda t: (round(sweep[t]["mIoU"], 2), -abs(t - 0.5)))
