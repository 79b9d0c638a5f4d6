"""LightningModule that trains any registered RRSIS model.

Loss, optimiser and schedule follow the paper's recipe (see :mod:`rrsis.engine.presets`);
validation reports the LAVT metrics (oIoU, mIoU, Pr@X) of :mod:`rrsis.eval.metrics` each
epoch under ``val/...``. Checkpoints also carry the Python / NumPy / torch RNG states so a
resumed run draws the same random numbers as an uninterrupted one would.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis.engine.auxiliary import SemanticAuxiliary
from rrsis.engine.losses import SegmentationLoss
from rrsis.engine.optim import build_optimizer, param_groups
from rrsis.engine.presets import TrainConfig
from rrsis.engine.transforms import SEMANTIC_IGNORE
from rrsis.errors import RRSISError
from rrsis.eval.metrics import summarize
from rrsis.models.encoders.base import TextEncoder, VisionEncoder
from rrsis.models.speed import channels_last


def freeze_encoders(model: nn.Module, text: bool = True, vision: bool = False) -> list[nn.Module]:
    """Stop gradients into the ``TextEncoder`` (and/or ``VisionEncoder``) parts of ``model``.

    Frozen parts are put in eval mode too (dropout off, BatchNorm statistics fixed).

    Returns:
        The frozen modules, to be put back in eval mode whenever Lightning calls ``train()``.
    """
    kinds = tuple(k for k, on in ((TextEncoder, text), (VisionEncoder, vision)) if on)
    frozen = [m for m in model.modules() if kinds and isinstance(m, kinds)]
    for module in frozen:
        module.requires_grad_(False)
        module.eval()
    return frozen


def limit_text_training(model: nn.Module, layers: int | None) -> list[str]:
    """Keep only the first ``layers`` transformer layers of ``model``'s text encoder trainable.

    The text encoder's other parameters (embeddings, later layers, pooler) stop receiving
    gradients; they still run in training mode, as in LAVT, whose optimiser simply leaves them
    out. Works on encoders holding a ``transformers`` BERT-like model as ``.model``.

    Returns:
        The names of the parameters frozen (empty when ``layers`` is ``None`` or the text
        encoder is already frozen).
    """
    if layers is None:
        return []
    if layers < 0:
        raise RRSISError(f"text_train_layers must be >= 0, got {layers}")
    frozen = []
    for prefix, module in model.named_modules():
        if not isinstance(module, TextEncoder):
            continue
        for name, param in module.named_parameters():
            match = re.match(r"model\.encoder\.layer\.(\d+)\.", name)
            if param.requires_grad and not (match and int(match.group(1)) < layers):
                param.requires_grad_(False)
                frozen.append(f"{prefix}.{name}")
    return frozen


def _numpy_state_to_plain(state: tuple) -> list:
    name, keys, pos, has_gauss, cached = state
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def _numpy_state_from_plain(state: list) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)


def planned_steps(trainer: pl.Trainer) -> int:
    """Optimiser steps of the run's planned epochs: the length of its poly schedule.

    ``max_steps`` (like ``max_time``) only stops a run early; it does not shorten the schedule
    (Lightning's ``estimated_stepping_batches`` would), so a run stopped by it and resumed with
    a larger one continues on the schedule it had, as an uninterrupted run would.
    """
    estimate = trainer.estimated_stepping_batches  # loads the training data when needed
    batches, epochs = trainer.num_training_batches, trainer.max_epochs
    if epochs is None or epochs < 0 or batches == float("inf"):
        return int(estimate)
    return math.ceil(batches / trainer.accumulate_grad_batches) * max(int(epochs), 1)


class RRSISLightningModule(pl.LightningModule):
    """Wraps an ``RRSISModel`` for training with Lightning.

    Args:
        model: a network following the RRSISModel contract
            (``forward(image, word_ids, word_mask) -> logits (B, 2, H, W)``, ``config``).
        config: hyper-parameters (lr, weight decay, class weights, poly power, freezing).

    The batch layout is the one of :class:`rrsis.engine.transforms.Collate`.
    """

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        # The model is rebuilt from its own config when a checkpoint is loaded, so only plain
        # data goes into the checkpoint's hyper-parameters.
        self.save_hyperparameters(
            {"train": config.to_dict(), "model_config": getattr(model, "config", None)}
        )
        self.criterion = SegmentationLoss(tuple(config.class_weights), config.dice_weight)
        self._frozen = freeze_encoders(model, text=config.freeze_text, vision=config.freeze_vision)
        limit_text_training(model, config.text_train_layers)
        # Training-only head of the auxiliary semantic loss (never exported with the model).
        self.semantic_aux: SemanticAuxiliary | None = None
        if config.semantic_weight > 0:
            if config.semantic_classes < 1:
                raise RRSISError("semantic_weight > 0 needs semantic_classes >= 1")
            self.semantic_aux = SemanticAuxiliary(
                model, model.vision.out_channels, config.semantic_classes
            )
        self._val_inter: list[int] = []
        self._val_union: list[int] = []
        if config.channels_last:
            # Only the memory layout changes: exports copy the weights back to contiguous
            # tensors (rrsis.models.io.save_model), and checkpoints load into either layout.
            self.to(memory_format=torch.channels_last)

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        """``(B, 3, H, W)``, ``(B, N)``, ``(B, N)`` -> logits ``(B, 2, H, W)``."""
        if self.config.channels_last:
            image = channels_last(image)
        return self.model(image, word_ids, word_mask)

    def on_train_epoch_start(self) -> None:
        # Lightning switches the whole model to train mode; a frozen encoder must stay in eval
        # so that its dropout does not add noise to features it will never adapt to.
        for module in self._frozen:
            module.eval()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self(batch["image"], batch["word_ids"], batch["word_mask"])
        loss = self.criterion(logits, batch["mask"])
        if self.semantic_aux is not None:
            semantic = batch.get("semantic")
            if semantic is None:
                semantic = torch.full_like(batch["mask"], SEMANTIC_IGNORE)
            aux = self.semantic_aux.loss(semantic)
            self.log(
                "train/semantic_loss", aux, on_step=True, on_epoch=True, batch_size=logits.shape[0]
            )
            loss = loss + self.config.semantic_weight * aux
        self.log(
            "train/loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=batch["image"].shape[0],
            sync_dist=True,
        )
        self.log(
            "lr",
            self.optimizers().param_groups[0]["lr"],
            on_step=True,
            on_epoch=False,
            batch_size=batch["image"].shape[0],
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_inter, self._val_union = [], []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self(batch["image"], batch["word_ids"], batch["word_mask"])
        loss = self.criterion(logits, batch["mask"])
        target = batch["mask"].bool()
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(
                logits, size=target.shape[-2:], mode="bilinear", align_corners=False
            )
        pred = logits.argmax(1).bool()
        self._val_inter += (pred & target).flatten(1).sum(1).tolist()
        self._val_union += (pred | target).flatten(1).sum(1).tolist()
        self.log("val/loss", loss, on_epoch=True, batch_size=target.shape[0], sync_dist=True)
        return loss

    def on_validation_epoch_end(self) -> None:
        inter, union = self._val_inter, self._val_union
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Per-sample counts from every rank give exact oIoU / mIoU (up to the sampler's
            # padding duplicates), unlike averaging each rank's metrics.
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (inter, union))
            inter = [v for part in gathered for v in part[0]]
            union = [v for part in gathered for v in part[1]]
        if not inter:
            return
        metrics = summarize(np.asarray(inter), np.asarray(union))
        for key, value in metrics.items():
            if key != "n":
                # Same value on every rank already, so no sync_dist reduction is needed.
                self.log(f"val/{key}", float(value), prog_bar=key in ("oIoU", "mIoU"))

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.config
        groups = param_groups(self.model, cfg.lr, cfg.weight_decay, cfg.pretrained_lr_scale)
        if self.semantic_aux is not None:
            for group in param_groups(self.semantic_aux, cfg.lr, cfg.weight_decay):
                group["name"] = "semantic_aux_" + group["name"]
                groups.append(group)
        total = planned_steps(self.trainer)
        optimizer, scheduler = build_optimizer(groups, total, cfg.poly_power)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = {
            "python": random.getstate(),
            # Plain lists/ints so the checkpoint loads with torch.load(weights_only=True).
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "torch": torch.get_rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states:
            random.setstate(states["python"])
            np.random.set_state(_numpy_state_from_plain(states["numpy"]))
            torch.set_rng_state(states["torch"])
