"""``train(run)``: fit a model on RefSegRS-format data with Lightning and export the best weights.

The run is described by a :class:`~rrsis.engine.config.TrainRun` (data, output directory,
recipe, devices, time budget). Layout of ``run.out`` after a run::

    checkpoints/best-*.ckpt   best validation mIoU (the test split is never looked at)
    checkpoints/last.ckpt     refreshed every epoch and every ``ckpt_every_n_steps`` steps
    logs/                     CSV metrics (and TensorBoard events when tensorboard is installed)
    model.safetensors         best model, loadable with ``rrsis.models.io.load_model``
    hparams.json              everything needed to reproduce the run

Distribution (``devices``, ``accelerator``, ``strategy="ddp"``) is entirely Lightning's.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import platform
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from torch import nn

from rrsis.data.dubai import DubaiLabelLookup
from rrsis.data.files import clean_stale_temps
from rrsis.engine.callbacks import FitScheduleToTime, RunCheckpoint
from rrsis.engine.config import (
    TrainRun,
    check_run_dir,
    max_time_seconds,
    parse_max_time,
    resumed_run,
    write_record,
)
from rrsis.engine.datamodule import RefSegDataModule
from rrsis.engine.module import RRSISLightningModule
from rrsis.engine.presets import TrainConfig
from rrsis.engine.runfiles import (
    AtomicCheckpointIO,
    BackgroundCheckpointIO,
    RunCSVLogger,
    checkpoint_step,
)
from rrsis.engine.sampling import ResumeDataOrder
from rrsis.errors import DatasetError, ModelError, OutputExistsError, RRSISError
from rrsis.models import registry
from rrsis.models.convert import LGCE_OF_LAVT, lgce_from_lavt
from rrsis.models.io import resolve_model, save_model

MONITOR = "val/mIoU"


def build_model(name: str, kwargs: dict[str, Any] | None = None, tiny: bool = False) -> nn.Module:
    """A registered model (``get_model``), or its tiny random test version."""
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


def start_from(
    init: str | Path, recipe: TrainConfig, recipe_fields: Collection[str] = ()
) -> tuple[nn.Module, TrainConfig]:
    """The model of a fine-tuning run and its recipe adapted to it.

    Args:
        init: ``"default"`` (the shipped model) or a model file written by rrsis, as
            ``rrsis.models.io.resolve_model`` reads them.
        recipe: the run's recipe.
        recipe_fields: fields of ``recipe`` the caller chose (see
            :attr:`rrsis.engine.config.TrainRun.recipe_fields`).

    Returns:
        The model in training mode, without the threshold recorded for the old weights, and
        the recipe with the file's architecture (``model_name``, ``model_kwargs``) and, unless
        chosen, its input size: the run (and a resume of it) rebuilds that architecture.

    Raises:
        ModelError: ``init`` is a bare registry name (random weights), or ``recipe_fields``
            names another model than the file's (other than the LGCE model of its LAVT,
            :func:`rrsis.models.convert.lgce_from_lavt`).
    """
    model, untrained = resolve_model(init)
    if untrained:
        raise ModelError(
            f"--init {init}: a registry name has random weights; pass a model file "
            "(or 'default'), or train the registry model with --model"
        )
    name = model.config["name"]
    wanted = recipe.model_name if "model_name" in recipe_fields else name
    if wanted != name:
        if LGCE_OF_LAVT.get(name) != wanted:
            raise ModelError(f"{init}: holds a {name!r} model, not {wanted!r} (--model)")
        model = lgce_from_lavt(model, wanted)
    model.__dict__.pop("recommended_threshold", None)  # chosen for the old weights
    changes: dict[str, Any] = {
        "model_name": model.config["name"],
        "model_kwargs": dict(model.config.get("kwargs") or {}),
    }
    if "input_size" not in recipe_fields:
        changes["input_size"] = int(model.input_size)
    return model.train(), dataclasses.replace(recipe, **changes)


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


def _loggers(out_dir: Path, resume_step: int | None) -> list:
    loggers: list = [RunCSVLogger(out_dir, "logs", "", resume_step)]
    if importlib.util.find_spec("tensorboard") is not None:
        # Optional dependency: imported only when tensorboard is installed.
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out_dir, name="logs", version="tb"))
    return loggers


def _check_data(run: TrainRun) -> None:
    """Fail on a wrong path before spending time on building the model."""
    for root in [*run.data, *([run.val] if run.val is not None else [])]:
        if not Path(root).is_dir():
            raise DatasetError("dataset root does not exist", root)


def checkpoint_io(run: TrainRun) -> AtomicCheckpointIO:
    """How a run writes checkpoints: atomically, and in a background thread where
    ``run.async_checkpoints`` (or, when it is ``None``, training on a CUDA GPU) says so."""
    background = run.async_checkpoints
    if background is None:
        background = run.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return BackgroundCheckpointIO() if background else AtomicCheckpointIO()


#: Steps between progress-bar refreshes on a CUDA GPU. Each refresh reads the logged loss back
#: from the device, a wait for the GPU that the training step otherwise never has.
GPU_PROGRESS_REFRESH = 10


def progress_callbacks(run: TrainRun) -> list[pl.Callback]:
    """The progress bar of a run: Lightning's default, refreshed every
    :data:`GPU_PROGRESS_REFRESH` steps instead of every step on a CUDA GPU."""
    on_gpu = run.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if not (run.progress and on_gpu):
        return []
    return [TQDMProgressBar(refresh_rate=GPU_PROGRESS_REFRESH)]


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """Lightning precision of a run: ``"auto"`` is ``"bf16-mixed"`` where the run uses a CUDA
    GPU that supports bfloat16, ``"32-true"`` otherwise; other values stay."""
    if precision != "auto":
        return precision
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def _record(run: TrainRun, model: nn.Module, lookup: DubaiLabelLookup | None) -> dict[str, Any]:
    """The ``hparams.json`` of a run (the keys are read back by :func:`resumed_run`)."""
    return {
        "train": run.recipe.to_dict(),
        "model_config": getattr(model, "config", None),
        "tiny": run.tiny,
        "data_roots": [str(r) for r in run.data],
        "val_root": None if run.val is None else str(run.val),
        "preset": run.preset,
        "init": None if run.init is None else str(run.init),
        "semantic_labels": None if lookup is None else str(run.semantic_labels),
        "trainer": {
            "devices": run.devices,
            "accelerator": run.accelerator,
            "strategy": run.strategy,
            "max_time": run.max_time,
            "max_steps": run.max_steps,
            "fit_to_time": run.fit_to_time,
        },
        "monitor": MONITOR,
        "versions": {
            "torch": torch.__version__,
            "pytorch_lightning": pl.__version__,
            "python": platform.python_version(),
        },
    }


def train(
    run: TrainRun, *, model: nn.Module | None = None, callbacks: Sequence[pl.Callback] = ()
) -> Path:
    """Train a model and export its best-on-validation weights.

    Args:
        run: the data, output directory, recipe and trainer settings
            (:class:`~rrsis.engine.config.TrainRun`).
        model: a ready-built model to train instead of building ``run.recipe.model_name``
            (its ``config`` is what ``hparams.json`` records); pass it again to resume.
        callbacks: extra Lightning callbacks (e.g. :class:`rrsis.engine.timing.StepTimer`,
            :class:`rrsis.engine.callbacks.StopAfter`).

    Returns:
        Path of the best checkpoint (``last.ckpt`` if validation never ran).
    """
    check_run_dir(run)
    resume_step = None
    if run.resume:
        run = resumed_run(run)
        resume_step, _ = checkpoint_step(run.checkpoint_dir / "last.ckpt")
    elif run.checkpoint_dir.exists() and any(run.checkpoint_dir.iterdir()):
        raise OutputExistsError(f"{run.out}: holds checkpoints; pass --resume or another --out")
    _check_data(run)
    # What runs killed while writing left behind (their own, recognisable temporary files).
    clean_stale_temps(run.out, recursive=True)
    lookup = None
    if run.recipe.semantic_weight > 0:
        if run.semantic_labels is None:
            raise RRSISError(
                "semantic_weight > 0 needs the label maps: pass semantic_labels (the Dubai source tree)"
            )
        lookup = DubaiLabelLookup(run.semantic_labels)
        if not run.recipe.semantic_classes:
            recipe = dataclasses.replace(run.recipe, semantic_classes=lookup.num_classes)
            run = dataclasses.replace(run, recipe=recipe)
    pl.seed_everything(run.recipe.seed, workers=True)
    if run.init is not None and not run.resume:
        if model is not None:
            raise RRSISError("pass either a model or init weights, not both")
        model, recipe = start_from(run.init, run.recipe, run.recipe_fields)
        run = dataclasses.replace(run, recipe=recipe)
    if model is None:
        model = build_model(run.recipe.model_name, run.recipe.model_kwargs, tiny=run.tiny)
    size = int(run.recipe.input_size or model.input_size)
    divisor = int(getattr(model, "size_divisor", 1))
    if size % divisor:
        raise ModelError(f"input size must be a multiple of {divisor}, got {size}")
    run = dataclasses.replace(run, recipe=dataclasses.replace(run.recipe, input_size=size))
    config = run.recipe
    # The exported model must remember the size it was trained at (inference resizes to it).
    model.input_size = size
    model_config = getattr(model, "config", None)
    if isinstance(model_config, dict) and "input_size" in model_config.get("kwargs", {}):
        model_config["kwargs"]["input_size"] = size

    datamodule = RefSegDataModule(
        [str(r) for r in run.data],
        None if run.val is None else str(run.val),
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
    ckpt_dir = run.checkpoint_dir
    best_cb = RunCheckpoint(
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
    step_cb = RunCheckpoint(
        dirpath=ckpt_dir,
        save_top_k=0,
        save_last=True,
        enable_version_counter=False,
        every_n_train_steps=max(1, config.ckpt_every_n_steps),
        save_on_stop=True,
    )
    fitter = None
    if run.fit_to_time:
        fitter = FitScheduleToTime(max_time_seconds(str(run.max_time)), power=config.poly_power)
    if run.accelerator != "cpu" and torch.cuda.is_available():
        # TF32 matrix products in the fp32 parts (Lightning warns when this is unset).
        torch.set_float32_matmul_precision("high")
    trainer = pl.Trainer(
        sync_batchnorm=use_sync_batchnorm(config, run.accelerator, run.devices),
        max_epochs=config.epochs,
        max_steps=run.max_steps,
        max_time=parse_max_time(run.max_time),
        devices=run.devices,
        accelerator=run.accelerator,
        strategy=run.strategy,
        precision=resolve_precision(config.precision, run.accelerator),
        gradient_clip_val=config.grad_clip or None,
        callbacks=[best_cb, step_cb, ResumeDataOrder()]
        + ([fitter] if fitter else [])
        + progress_callbacks(run)
        + list(callbacks),
        logger=_loggers(run.out, resume_step),
        plugins=[checkpoint_io(run)],
        default_root_dir=run.out,
        deterministic=run.deterministic,
        log_every_n_steps=min(10, max(1, config.ckpt_every_n_steps)),
        enable_progress_bar=run.progress,
        enable_model_summary=run.progress,
        limit_train_batches=run.limit_train_batches,
        limit_val_batches=run.limit_val_batches,
        num_sanity_val_steps=0,
    )
    record = _record(run, model, lookup)
    if trainer.is_global_zero and not run.resume:
        run.out.mkdir(parents=True, exist_ok=True)
        write_record(run.hparams_path, record)
    trainer.fit(
        module, datamodule=datamodule, ckpt_path="last" if run.resume else None, weights_only=True
    )

    best = best_cb.best_model_path or str(ckpt_dir / "last.ckpt")
    if trainer.is_global_zero:
        model.train_image_size = datamodule.train_image_side
        if datamodule.train_words:
            # A fine-tuned model keeps the words it knew before (--init) and adds the new ones.
            known = set(getattr(model, "vocabulary", None) or ())
            model.vocabulary = sorted(known | set(datamodule.train_words))
        export_checkpoint(best, model, run.out / "model.safetensors")
        record["best_checkpoint"] = Path(best).name
        score = best_cb.best_model_score
        record["best_" + MONITOR.replace("/", "_")] = None if score is None else float(score)
        record["global_step"] = int(trainer.global_step)
        record["epochs_done"] = int(trainer.current_epoch)
        if fitter is not None:
            # Those of the earlier part of a resumed run too (restored from the checkpoint).
            record["fit_to_time_events"] = list(fitter.events)
        write_record(run.hparams_path, record)
    return Path(best)
