"""``train()``: fit a model on RefSegRS-format data with Lightning and export the best weights.

Layout of ``out_dir`` after a run::

    checkpoints/best-*.ckpt   best validation mIoU (the test split is never looked at)
    checkpoints/last.ckpt     refreshed every epoch and every ``ckpt_every_n_steps`` steps
    logs/                     CSV metrics (and TensorBoard events when tensorboard is installed)
    model.safetensors         best model, loadable with ``rrsis.models.io.load_model``
    hparams.json              everything needed to reproduce the run

Distribution (``devices``, ``accelerator``, ``strategy="ddp"``) is entirely Lightning's.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, Timer
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from rrsis.engine.datamodule import RefSegDataModule, ResumeDataOrder
from rrsis.engine.module import RRSISLightningModule
from rrsis.engine.presets import TrainConfig, get_preset
from rrsis.errors import DatasetError, ModelError, OutputExistsError, RRSISError

MONITOR = "val/mIoU"


def parse_max_time(value: str | None) -> str | None:
    """``"HH:MM:SS"`` (or ``"DD:HH:MM:SS"``) -> Lightning's ``"DD:HH:MM:SS"``; ``None`` stays."""
    if value is None:
        return None
    parts = value.split(":")
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        raise RRSISError(f"--max-time must look like HH:MM:SS, got {value!r}")
    if len(parts) == 3:
        parts = ["00", *parts]
    return ":".join(f"{int(p):02d}" for p in parts)


def build_model(name: str, kwargs: dict[str, Any] | None = None, tiny: bool = False) -> nn.Module:
    """A registered model (``get_model``), or its tiny random test version."""
    from rrsis.models import registry

    if tiny:
        return registry.get_tiny_model(name)
    return registry.get_model(name, **(kwargs or {}))


def export_checkpoint(checkpoint: str | Path, model: nn.Module, path: str | Path) -> Path:
    """Load a training checkpoint's weights into ``model`` and save it as safetensors.

    Args:
        checkpoint: a ``.ckpt`` written by :func:`train` (loaded with ``weights_only=True``).
        model: a model of the same architecture (its weights are overwritten).
        path: output ``.safetensors`` path.
    """
    from rrsis.models.io import save_model

    save_model(load_checkpoint_weights(checkpoint, model), path)
    return Path(path)


def load_checkpoint_weights(checkpoint: str | Path, model: nn.Module) -> nn.Module:
    """Load the network weights of a training checkpoint into ``model`` (strictly); returns it.

    The checkpoint is read with ``weights_only=True``; its ``model.``-prefixed entries (the
    Lightning module's network) must match ``model``'s parameters exactly.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(weights)
    return model


def _init_model(init: str | Path, model_name: str | None) -> tuple[nn.Module, Path]:
    """The model of ``init`` (a save_model file, or "default") for fine-tuning, and its path.

    ``model_name`` may also be the LGCE model of the file's LAVT
    (:func:`rrsis.models.convert.lgce_from_lavt`).
    """
    from rrsis.models.convert import LGCE_OF_LAVT, lgce_from_lavt
    from rrsis.models.io import load_model
    from rrsis.weights import default_weights_path

    path = default_weights_path() if str(init) == "default" else Path(init)
    model = load_model(path)
    name = model.config["name"]
    if model_name and model_name != name:
        if LGCE_OF_LAVT.get(name) != model_name:
            raise ModelError(f"{path}: holds a {name!r} model, not {model_name!r} (--model)")
        model = lgce_from_lavt(model, model_name)
    model.__dict__.pop("recommended_threshold", None)  # chosen for the old weights
    return model.train(), path


def use_sync_batchnorm(config: TrainConfig, accelerator: str, devices: int | str) -> bool:
    """Whether Lightning should convert batch norms to ``SyncBatchNorm`` for this run.

    Only for ``config.sync_batchnorm`` runs on several GPUs: on one device there is nothing to
    synchronise, and PyTorch's SyncBatchNorm refuses CPU tensors (a CPU DDP run would fail).
    """
    if not config.sync_batchnorm:
        return False
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if not gpu:
        return False
    if devices in ("auto", -1, "-1"):
        return torch.cuda.device_count() > 1
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    if isinstance(devices, str):
        devices = (
            len([d for d in devices.split(",") if d.strip()]) if "," in devices else int(devices)
        )
    return int(devices) > 1


def _loggers(out_dir: Path) -> list:
    loggers: list = [CSVLogger(out_dir, name="logs", version="")]
    if importlib.util.find_spec("tensorboard") is not None:
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out_dir, name="logs", version="tb"))
    return loggers


class FitScheduleToTime(pl.Callback):
    """End a time-budgeted run on an epoch boundary, with its poly schedule completed.

    The epoch count of a run with a wall-time budget is planned before training (e.g. from a few
    timed steps). When real epochs turn out slower, ``max_time`` alone cuts the run mid-schedule
    with the learning rate still high. After every training epoch (its validation included) this
    callback projects the mean epoch time onto what is left of ``budget_s`` (less a ``margin``
    fraction) and, if the planned epochs no longer fit, lowers ``max_epochs`` and re-targets the
    per-step poly schedule: from the current multiplier ``f0`` at step ``s0`` it decays as
    ``f0 * (1 - (s - s0) / (end - s0)) ** power``, reaching 0 at the new last step. When a run was
    shortened because its early epochs were slow (other work on the machine) and later ones make
    up for it, it gives epochs back the same way, never beyond the planned count and never after
    the last epoch of the current schedule (whose lr has reached 0). Each change is kept in
    ``events``.

    A resumed run counts the training time of its earlier part (Lightning's ``Timer`` keeps it in
    the checkpoint, as it does for ``max_time``), and continues on the schedule it had: the
    re-targets are stored in the checkpoint (:meth:`state_dict`) and applied again, in order, when
    training restarts, with the shortened ``max_epochs``. (Before session 8 they were not stored:
    a run resumed in the middle of a shortened schedule jumped back to the planned, higher lr.)

    Args:
        budget_s: the run's wall-time budget in seconds, counted from the start of training.
        power: the schedule's poly exponent.
        margin: fraction of the budget kept free (the final export, timing noise).
        clock: time source, ``time.monotonic`` by default (tests pass a fake one).
    """

    def __init__(
        self, budget_s: float, power: float = 0.9, margin: float = 0.05, clock=None
    ) -> None:
        self.budget_s = float(budget_s)
        self.power = power
        self.margin = margin
        self.clock = clock or time.monotonic
        self.events: list[dict[str, Any]] = []
        self._start = 0.0
        self._first_epoch = 0
        self._before = 0.0
        self._to_reapply: list[dict[str, Any]] = []
        self._planned: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"events": [dict(event) for event in self.events]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events = [dict(event) for event in state_dict.get("events", [])]
        self._to_reapply = list(self.events)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self.clock()
        self._first_epoch = trainer.current_epoch
        # Training time spent before a resume (0 for a fresh run).
        timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
        self._before = float(timers[0]._offset) if timers else 0.0
        self._planned = trainer.fit_loop.max_epochs
        # A resumed run: the schedulers were rebuilt as planned; re-target them again, in order.
        for event in self._to_reapply:
            self._retarget_schedulers(
                trainer, event["schedule_start_step"], event["schedule_end_step"]
            )
            trainer.fit_loop.max_epochs = event["fits"]
        self._to_reapply = []

    def _retarget_schedulers(self, trainer: pl.Trainer, start: int, end: int) -> None:
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                scheduler.lr_lambdas = [
                    _retarget(fn, start, end, self.power) for fn in scheduler.lr_lambdas
                ]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done = trainer.current_epoch + 1 - self._first_epoch
        elapsed = self.clock() - self._start
        per_epoch = elapsed / max(1, done)
        left = self.budget_s * (1.0 - self.margin) - elapsed - self._before
        fits = trainer.current_epoch + 1 + max(0, int(left // per_epoch))
        # Every rank must agree (their clocks differ slightly).
        fits = int(trainer.strategy.broadcast(fits, src=0))
        current = trainer.fit_loop.max_epochs
        if current is None or current < 0:
            return
        planned = self._planned if self._planned is not None and self._planned > 0 else current
        fits = min(fits, planned)
        last = trainer.current_epoch + 1 >= current  # the schedule has reached lr 0
        if fits == current or (fits > current and last):
            return
        trainer.fit_loop.max_epochs = fits
        steps_per_epoch = max(1, trainer.num_training_batches // trainer.accumulate_grad_batches)
        end = fits * steps_per_epoch
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        start = int(schedulers[0].last_epoch) if schedulers else int(trainer.global_step)
        self._retarget_schedulers(trainer, start, end)
        self.events.append(
            {
                "after_epoch": int(trainer.current_epoch),
                "epoch_s": round(per_epoch, 1),
                "epochs": f"{current} -> {fits}",
                "fits": fits,
                "schedule_start_step": start,
                "schedule_end_step": end,
            }
        )
        what = "do not fit the budget" if fits < current else "leave time for more"
        rank_zero_info(
            f"fit to time: {per_epoch:.0f} s per epoch, {current} epochs {what} (planned "
            f"{planned}); ending after epoch {fits} (step {end}), the lr schedule re-targeted"
        )


def _retarget(fn, start: int, end: int, power: float):
    """A multiplier equal to ``fn(start)`` at ``start`` that decays poly-wise to 0 at ``end``."""
    f0 = fn(start)
    span = max(1, end - start)

    def factor(step: int) -> float:
        if step <= start:
            return fn(step)
        return f0 * max(0.0, 1.0 - (step - start) / span) ** power

    return factor


class _StopAfter(pl.Callback):
    """Request a stop after ``steps`` optimiser steps (simulates an interrupted run)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def train(
    model_name: str | None,
    data_roots: Sequence[str | Path],
    out_dir: str | Path,
    val_root: str | Path | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    input_size: int | None = None,
    devices: int | str = 1,
    accelerator: str = "auto",
    strategy: str = "auto",
    seed: int | None = None,
    resume: bool = False,
    preset: str = "default",
    max_time: str | None = None,
    workers: int | None = None,
    max_steps: int = -1,
    tiny: bool = False,
    config: TrainConfig | None = None,
    limit_train_batches: int | float | None = None,
    limit_val_batches: int | float | None = None,
    progress_bar: bool = True,
    model: nn.Module | None = None,
    stop_after_steps: int | None = None,
    freeze_vision: bool | None = None,
    semantic_labels: str | Path | None = None,
    semantic_weight: float | None = None,
    photometric: float | None = None,
    balance: float | None = None,
    preload: bool | None = None,
    fit_to_time: bool = False,
    init: str | Path | None = None,
    callbacks: Sequence[pl.Callback] = (),
    deterministic: bool | str = "warn",
) -> Path:
    """Train a model and export its best-on-validation weights.

    Args:
        model_name: registry name; ``None`` = the preset's model.
        data_roots: RefSegRS-format roots whose ``train`` splits are concatenated.
        out_dir: run directory (see the module docstring).
        val_root: root whose ``val`` split selects checkpoints; ``None`` = ``data_roots[0]``.
        epochs, batch_size, lr, input_size, seed, workers: override the preset's values.
        devices, accelerator, strategy: passed to ``pl.Trainer`` (``strategy="ddp"``).
        resume: continue from ``out_dir/checkpoints/last.ckpt`` (optimiser, schedule, epoch,
            step and RNG states) with the hyper-parameters saved in ``hparams.json``.
        preset: ``"default"`` (CPU recipe) or ``"paper"`` (RRSIS paper recipe).
        max_time: stop after this wall time (``HH:MM:SS``); the schedule is not shortened.
        max_steps: stop after this many optimiser steps (-1 = epochs decide).
        tiny: use ``get_tiny_model`` (tests and smoke runs).
        config: full hyper-parameters; replaces ``preset`` when given.
        limit_train_batches, limit_val_batches: passed to ``pl.Trainer`` (smoke runs).
        progress_bar: show Lightning's progress bar.
        model: a ready-built model to train instead of building ``config.model_name`` (its
            ``config`` is what ``hparams.json`` records); pass it again to resume.
        freeze_vision: override the preset's ``freeze_vision`` (frozen image encoder).
        stop_after_steps: stop as if killed after this many steps, without shortening the
            schedule (tests of ``resume``).
        semantic_labels: Dubai source tree whose label maps give every training crop's full
            class map (``rrsis.data.dubai.DubaiLabelLookup``) for the auxiliary semantic loss;
            needed when ``config.semantic_weight > 0``.
        semantic_weight: override the preset's ``semantic_weight`` (0 = no auxiliary loss).
        photometric: override the preset's ``photometric`` augmentation strength (0 = off).
        balance: override the preset's category balancing strength (0 = off).
        preload: override the preset's ``preload`` (samples decoded once and kept in RAM).
        fit_to_time: with ``max_time``, shorten the run after each epoch so that it ends on an
            epoch boundary within the budget with its lr schedule completed
            (:class:`FitScheduleToTime`) instead of being cut mid-schedule.
        init: fine-tune: start from the weights of a model file written by
            :func:`rrsis.models.io.save_model` (``"default"`` = the shipped default model)
            instead of the registry's initialisation. The file's architecture is used
            (``model_name``, if given, must name it) and its recorded threshold is dropped
            (it was chosen for the old weights). Ignored on resume.

        callbacks: extra Lightning callbacks (e.g. :class:`rrsis.engine.timing.StepTimer`).
        deterministic: passed to ``pl.Trainer``: ``"warn"`` (default) uses deterministic
            kernels where PyTorch has them and warns where it has not; ``False`` lets cuDNN
            pick the fastest (non-reproducible) ones.

    Returns:
        Path of the best checkpoint (``last.ckpt`` if validation never ran).
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    hparams_path = out / "hparams.json"
    if fit_to_time and parse_max_time(max_time) is None:
        raise RRSISError("fit_to_time (--fit-to-time) needs a time budget: max_time (--max-time)")
    if resume:
        if not (ckpt_dir / "last.ckpt").is_file():
            raise RRSISError(f"{ckpt_dir / 'last.ckpt'}: nothing to resume from")
        # The saved recipe wins so the schedule and data order continue unchanged.
        saved = json.loads(hparams_path.read_text())
        config = TrainConfig.from_dict(saved["train"])
        tiny = saved.get("tiny", tiny)
        data_roots = saved.get("data_roots", data_roots)
        val_root = saved.get("val_root", val_root)
        preset = saved.get("preset", preset)
        semantic_labels = saved.get("semantic_labels", semantic_labels)
    else:
        if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
            raise OutputExistsError(f"{out}: holds checkpoints; pass --resume or another --out")
        if config is None:
            config = get_preset(preset, model_name)
        elif model_name:
            config.model_name = model_name
        for key, value in (
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("lr", lr),
            ("input_size", input_size),
            ("seed", seed),
            ("workers", workers),
            ("freeze_vision", freeze_vision),
            ("semantic_weight", semantic_weight),
            ("photometric", photometric),
            ("balance", balance),
            ("preload", preload),
        ):
            if value is not None:
                setattr(config, key, value)
    assert config is not None
    # Fail on a wrong path before spending time on building the model.
    for root in [*data_roots, *([val_root] if val_root is not None else [])]:
        if not Path(root).is_dir():
            raise DatasetError("dataset root does not exist", root)
    lookup = None
    if config.semantic_weight > 0:
        from rrsis.data.dubai import DubaiLabelLookup

        if semantic_labels is None:
            raise RRSISError(
                "semantic_weight > 0 needs the label maps: pass semantic_labels (the Dubai source tree)"
            )
        lookup = DubaiLabelLookup(semantic_labels)
        if not config.semantic_classes:
            config.semantic_classes = lookup.num_classes
    pl.seed_everything(config.seed, workers=True)
    init_path = None
    if init is not None and not resume:
        if model is not None:
            raise RRSISError("pass either a model or init weights, not both")
        model, init_path = _init_model(init, model_name)
        # The run (and a resume of it) rebuilds this architecture, then loads the checkpoint.
        config.model_name = model.config["name"]
        config.model_kwargs = dict(model.config.get("kwargs") or {})
        if input_size is None:
            config.input_size = int(model.input_size)
    if model is None:
        model = build_model(config.model_name, config.model_kwargs, tiny=tiny)
    size = int(config.input_size or model.input_size)
    divisor = int(getattr(model, "size_divisor", 1))
    if size % divisor:
        raise ModelError(f"input size must be a multiple of {divisor}, got {size}")
    config.input_size = size
    # The exported model must remember the size it was trained at (inference resizes to it).
    model.input_size = size
    model_config = getattr(model, "config", None)
    if isinstance(model_config, dict) and "input_size" in model_config.get("kwargs", {}):
        model_config["kwargs"]["input_size"] = size

    datamodule = RefSegDataModule(
        [str(r) for r in data_roots],
        None if val_root is None else str(val_root),
        tokenize=model.tokenize,
        input_size=size,
        mean=model.mean,
        std=model.std,
        batch_size=config.batch_size,
        workers=config.workers,
        augment=config.augment,
        semantic_lookup=lookup,
        photometric=config.photometric,
        balance=config.balance,
        preload=config.preload,
        seed=config.seed,
    )
    module = RRSISLightningModule(model, config)
    best_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-{epoch:03d}",
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # A second callback refreshes last.ckpt within long epochs so a killed run loses little;
    # without version counters both callbacks write the same last.ckpt.
    step_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        save_top_k=0,
        save_last=True,
        enable_version_counter=False,
        every_n_train_steps=max(1, config.ckpt_every_n_steps),
    )
    fitter = None
    if fit_to_time:
        budget = parse_max_time(max_time)
        assert budget is not None  # checked on entry
        days, hours, minutes, secs = (int(p) for p in budget.split(":"))
        fitter = FitScheduleToTime(
            ((days * 24 + hours) * 60 + minutes) * 60 + secs, power=config.poly_power
        )
    trainer = pl.Trainer(
        sync_batchnorm=use_sync_batchnorm(config, accelerator, devices),
        max_epochs=config.epochs,
        max_steps=max_steps,
        max_time=parse_max_time(max_time),
        devices=devices,
        accelerator=accelerator,
        strategy=strategy,
        precision=config.precision,
        gradient_clip_val=config.grad_clip or None,
        callbacks=[best_cb, step_cb, ResumeDataOrder()]
        + ([fitter] if fitter else [])
        + ([_StopAfter(stop_after_steps)] if stop_after_steps else [])
        + list(callbacks),
        logger=_loggers(out),
        default_root_dir=out,
        deterministic=deterministic,
        log_every_n_steps=min(10, max(1, config.ckpt_every_n_steps)),
        enable_progress_bar=progress_bar,
        enable_model_summary=progress_bar,
        limit_train_batches=limit_train_batches,
        limit_val_batches=limit_val_batches,
        num_sanity_val_steps=0,
    )
    record = {
        "train": config.to_dict(),
        "model_config": getattr(model, "config", None),
        "tiny": tiny,
        "data_roots": [str(r) for r in data_roots],
        "val_root": None if val_root is None else str(val_root),
        "preset": preset,
        "init": None if init_path is None else str(init_path),
        "semantic_labels": None if lookup is None else str(semantic_labels),
        "trainer": {
            "devices": devices,
            "accelerator": accelerator,
            "strategy": strategy,
            "max_time": max_time,
            "max_steps": max_steps,
            "fit_to_time": fit_to_time,
        },
        "monitor": MONITOR,
        "versions": {
            "torch": torch.__version__,
            "pytorch_lightning": pl.__version__,
            "python": platform.python_version(),
        },
    }
    if trainer.is_global_zero and not resume:
        out.mkdir(parents=True, exist_ok=True)
        hparams_path.write_text(json.dumps(record, indent=2))
    trainer.fit(
        module, datamodule=datamodule, ckpt_path="last" if resume else None, weights_only=True
    )

    best = best_cb.best_model_path or str(ckpt_dir / "last.ckpt")
    if trainer.is_global_zero:
        model.train_image_size = datamodule.train_image_side
        export_checkpoint(best, model, out / "model.safetensors")
        record["best_checkpoint"] = Path(best).name
        score = best_cb.best_model_score
        record["best_" + MONITOR.replace("/", "_")] = None if score is None else float(score)
        record["global_step"] = int(trainer.global_step)
        record["epochs_done"] = int(trainer.current_epoch)
        if fitter is not None:
            # Those of the earlier part of a resumed run too (restored from the checkpoint).
            record["fit_to_time_events"] = list(fitter.events)
        hparams_path.write_text(json.dumps(record, indent=2))
    return Path(best)
