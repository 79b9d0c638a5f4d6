"""Where training time goes: bare model steps on random tensors, and real steps split by phase.

Two measurements, which on a datacentre GPU disagreed by ~3x (~18-20 steps/s timed with
:func:`time_bare_steps`, 5.7-7 steps/s reached in training):

* :func:`time_bare_steps`: forward + backward + optimiser step of the model alone, on random
  tensors, the way ``scripts/train_default.py`` plans a run's epochs;
* :class:`StepTimer`: a Lightning callback that splits every real training step into the time
  between batches (data loading and Lightning's bookkeeping, ``wait``) and the time from batch
  start to batch end (the module's training step: augmentation-free forward, the losses with the
  auxiliary head and Dice term, backward, optimiser, logging; ``step``).

``benchmarks/bench_train_step.py`` runs both on the same configuration and prints JSON.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from rrsis.engine.auxiliary import SemanticAuxiliary
from rrsis.engine.losses import SegmentationLoss, WeightedCrossEntropy
from rrsis.engine.module import freeze_encoders
from rrsis.engine.optim import build_optimizer, param_groups
from rrsis.engine.presets import TrainConfig
from rrsis.engine.train import build_model
from rrsis.models.speed import channels_last

#: Expression used when timing bare steps (its length sets the text side's cost).
TIMING_EXPRESSION = "the building next to the road"


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_bare_steps(
    model_name: str,
    config: TrainConfig,
    device: torch.device | str,
    warmup: int,
    timed: int,
    tiny: bool = False,
    recipe_losses: bool = False,
) -> list[float]:
    """Seconds of each of ``timed`` steps (after ``warmup`` untimed ones) on random tensors.

    Builds ``model_name`` with ``config.model_kwargs``, freezes its encoders as the config says, and times forward, the weighted
    cross-entropy, backward and an AdamW step at ``config.batch_size`` and ``config.input_size``,
    in the memory layout the training module uses (``config.channels_last``).

    With ``recipe_losses`` the step computes the recipe's whole loss as the training module
    does: the Dice term (``config.dice_weight``) and, when ``config.semantic_weight > 0``, the
    auxiliary semantic head on random class maps of ``config.semantic_classes`` classes (its
    parameters in the optimiser too). A real step minus this one is the input pipeline and
    Lightning's loop.
    """
    model = build_model(model_name, config.model_kwargs, tiny=tiny)
    model.to(device).train()
    freeze_encoders(model, text=config.freeze_text, vision=config.freeze_vision)
    groups = param_groups(model, config.lr, config.weight_decay)
    loss_fn: nn.Module = WeightedCrossEntropy(tuple(config.class_weights))
    aux = None
    if recipe_losses:
        loss_fn = SegmentationLoss(tuple(config.class_weights), config.dice_weight)
        if config.semantic_weight > 0:
            aux = SemanticAuxiliary(
                model, model.vision.out_channels, max(1, config.semantic_classes)
            ).to(device)
            groups += param_groups(aux, config.lr, config.weight_decay)
    optimizer, _ = build_optimizer(groups, 10)
    size, batch = config.input_size or model.input_size, config.batch_size
    image = torch.randn(batch, 3, size, size, device=device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
        if aux is not None:
            aux.to(memory_format=torch.channels_last)
        image = channels_last(image)
    ids, mask = model.tokenize([TIMING_EXPRESSION] * batch)
    ids, mask = ids.to(device), mask.to(device)
    target = torch.rand(batch, size, size, device=device) > 0.8
    classes = torch.randint(0, max(1, config.semantic_classes), (batch, size, size), device=device)
    loss_fn.to(device)
    times = []
    for _ in range(warmup + timed):
        start = time.perf_counter()
        loss = loss_fn(model(image, ids, mask), target)
        if aux is not None:
            loss = loss + config.semantic_weight * aux.loss(classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times[warmup:]


class StepTimer(pl.Callback):
    """Records, per training step, the seconds spent between batches and inside the step.

    ``wait`` is from the end of one batch to the start of the next (the loader, Lightning's
    logging and checkpointing between steps); ``step`` is ``on_train_batch_start`` to
    ``on_train_batch_end`` (the training step and the optimiser). CUDA is synchronised at both
    points, so kernels queued in one phase are not billed to the other. The first ``skip`` steps
    (allocation, cuDNN autotuning, worker start-up) are not kept.
    """

    def __init__(self, skip: int = 5) -> None:
        self.skip = skip
        self.wait: list[float] = []
        self.step: list[float] = []
        self._seen = 0
        self._batch_start = 0.0
        self._last_end: float | None = None

    def _now(self, pl_module: pl.LightningModule) -> float:
        _sync(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self._batch_start = self._now(pl_module)
        if self._last_end is not None and self._seen >= self.skip:
            self.wait.append(self._batch_start - self._last_end)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        end = self._now(pl_module)
        if self._seen >= self.skip:
            self.step.append(end - self._batch_start)
        self._seen += 1
        self._last_end = end

    def summary(self) -> dict[str, Any]:
        """Medians in milliseconds and the steps per second they imply."""
        if not self.step:
            return {"steps_timed": 0}
        step_ms = 1000 * statistics.median(self.step)
        wait_ms = 1000 * statistics.median(self.wait) if self.wait else 0.0
        return {
            "steps_timed": len(self.step),
            "step_ms_median": round(step_ms, 2),
            "wait_ms_median": round(wait_ms, 2),
            "wait_ms_max": round(1000 * max(self.wait), 2) if self.wait else 0.0,
            "steps_per_s": round(1000 / (step_ms + wait_ms), 2),
            "step_ms_all": [round(1000 * t, 1) for t in self.step],
        }
