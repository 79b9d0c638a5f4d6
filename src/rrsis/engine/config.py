"""What a training run is: the recipe (:class:`~rrsis.engine.presets.TrainConfig`) plus the run.

:class:`TrainRun` holds everything :func:`rrsis.engine.train.train` needs: the data, the output
directory, the recipe, where to start from, and how Lightning runs it (devices, time budget,
progress bar). The command line builds one from its options (``rrsis train``,
``rrsis benchmark``); Python callers build one directly::

    from rrsis.engine.config import TrainRun
    from rrsis.engine.presets import resolve_recipe
    from rrsis.engine.train import train

    run = TrainRun(["data/dubai"], "runs/a", resolve_recipe("default", epochs=2))
    best = train(run)

The run's ``hparams.json`` records the recipe (seed included) and the data, and a run resumed
with ``TrainRun(out=..., resume=True)`` takes them from there (:func:`resumed_run`), so a run is
reproducible from that file. Nothing here imports Lightning, so the command line can build
and check a run before paying for the import.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrsis.data.files import atomic_write, check_output
from rrsis.engine.presets import TrainConfig, get_preset
from rrsis.errors import RRSISError

HPARAMS = "hparams.json"


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


def max_time_seconds(value: str) -> int:
    """Seconds of a ``--max-time`` value (``HH:MM:SS`` or ``DD:HH:MM:SS``)."""
    days, hours, minutes, seconds = (int(p) for p in str(parse_max_time(value)).split(":"))
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _devices(value: int | str) -> int | str:
    """``"2"`` -> 2; ``"auto"``, ``"0,1"`` and ints stay."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


@dataclass
class TrainRun:
    """One training run: data, output directory, recipe and how Lightning runs it.

    Attributes:
        data: RefSegRS-format roots whose ``train`` splits are concatenated (may be empty
            with ``resume``: the saved run's data is used).
        out: run directory (layout in :mod:`rrsis.engine.train`).
        recipe: the hyper-parameters (:func:`rrsis.engine.presets.resolve_recipe`); the seed
            is ``recipe.seed``.
        val: root whose ``val`` split selects checkpoints; ``None`` = ``data[0]``.
        preset: name of the preset the recipe came from (recorded in ``hparams.json``).
        init: fine-tune: start from a model file written by ``rrsis.models.io.save_model``
            (``"default"`` = the shipped model; read with ``rrsis.models.io.resolve_model``)
            instead of the registry's initialisation. The file's architecture is used, and its
            input size unless ``recipe_fields`` has ``input_size``; ignored on resume.
        recipe_fields: recipe fields the caller chose explicitly (``rrsis train`` passes the
            options given). With ``init`` they decide: an explicit ``model_name`` must be the
            file's model (or the LGCE model of its LAVT), an explicit ``input_size`` is kept.
        resume: continue from ``out/checkpoints/last.ckpt`` with the recipe and data saved in
            ``out/hparams.json`` (optimiser, schedule, epoch, step and RNG states).
        semantic_labels: Dubai source tree whose label maps give every training crop's full
            class map, for the auxiliary semantic loss (``recipe.semantic_weight > 0``).
        devices: passed to ``pl.Trainer`` (``"2"`` becomes 2).
        accelerator: ``"auto"``, ``"cpu"``, ``"gpu"``, ... (``pl.Trainer``).
        strategy: Lightning strategy, e.g. ``"ddp"``.
        max_time: stop after this wall time (``HH:MM:SS``); the schedule is not shortened
            unless ``fit_to_time``.
        fit_to_time: with ``max_time``, end the run on an epoch boundary within the budget
            with its lr schedule completed (:class:`rrsis.engine.callbacks.FitScheduleToTime`).
        max_steps: stop after this many optimiser steps (-1 = the epochs decide).
        tiny: build the registry's tiny random test model (tests and smoke runs).
        progress: show Lightning's progress bar and model summary.
        limit_train_batches, limit_val_batches: passed to ``pl.Trainer`` (smoke runs).
        deterministic: passed to ``pl.Trainer``: ``"warn"`` uses deterministic kernels where
            PyTorch has them; ``False`` lets cuDNN pick the fastest (non-reproducible) ones.
        async_checkpoints: write checkpoints in a background thread from a copy of the state
            taken on the device, so training does not wait for the disk (a Swin-B LAVT
            checkpoint with the paper recipe is 2.43 GB). ``None`` (default): on when training on
            a CUDA GPU, where the copy is fast and the device has room for it; off on CPU, where
            the copy costs about a third of the write and the thread competes with training for
            the cores (``benchmarks/bench_checkpoint.py``).
    """

    data: Sequence[str | Path] = ()
    out: str | Path = ""
    recipe: TrainConfig = field(default_factory=lambda: get_preset("default"))
    val: str | Path | None = None
    preset: str = "default"
    init: str | Path | None = None
    recipe_fields: frozenset[str] = frozenset()
    resume: bool = False
    semantic_labels: str | Path | None = None
    devices: int | str = 1
    accelerator: str = "auto"
    strategy: str = "auto"
    max_time: str | None = None
    fit_to_time: bool = False
    max_steps: int = -1
    tiny: bool = False
    progress: bool = True
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    deterministic: bool | str = "warn"
    async_checkpoints: bool | None = None

    def __post_init__(self) -> None:
        if not str(self.out):
            raise RRSISError("a training run needs an output directory (--out)")
        self.out = Path(self.out)
        self.data = tuple(Path(root) for root in self.data)
        self.val = None if self.val is None else Path(self.val)
        self.recipe_fields = frozenset(self.recipe_fields)
        self.devices = _devices(self.devices)
        if self.semantic_labels is not None:
            self.semantic_labels = Path(self.semantic_labels)
        if not self.data and not self.resume:
            raise RRSISError("no training data given (--data)")
        if self.fit_to_time and parse_max_time(self.max_time) is None:
            raise RRSISError(
                "fit_to_time (--fit-to-time) needs a time budget: max_time (--max-time)"
            )
        parse_max_time(self.max_time)  # a malformed budget fails here, before any work
        if self.max_steps < -1 or self.max_steps == 0:
            raise RRSISError(f"max_steps must be positive (or -1), got {self.max_steps}")
        unknown = self.recipe_fields - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise RRSISError(f"unknown training hyper-parameters: {', '.join(sorted(unknown))}")

    @property
    def hparams_path(self) -> Path:
        return Path(self.out) / HPARAMS

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out) / "checkpoints"


def check_run_dir(run: TrainRun) -> None:
    """Check the run directory before any work: one line when it is a file, cannot be created
    or is not writable (a new run into a directory that holds checkpoints is refused later,
    with a hint to resume)."""
    check_output(run.out, overwrite=True, directory=True)


def read_record(path: Path) -> dict[str, Any]:
    """The JSON object of a run file (``hparams.json``); one-line errors name it and the problem.

    Raises:
        RRSISError: the file is missing, unreadable, not UTF-8, not JSON (e.g. truncated) or
            not a JSON object.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RRSISError(f"{path}: not found (the run's record)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RRSISError(f"{path}: cannot be read ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RRSISError(f"{path}: not valid JSON, truncated or damaged? ({err})") from None
    if not isinstance(data, dict):
        raise RRSISError(f"{path}: holds a JSON {type(data).__name__}, not an object")
    return data


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a run file as indented JSON, atomically: a killed run leaves the old file whole."""
    text = json.dumps(record, indent=2)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)


def resumed_run(run: TrainRun) -> TrainRun:
    """``run`` with the recipe and data of the run saved in ``run.out/hparams.json``.

    The saved recipe wins so the schedule and data order continue unchanged; the run's own
    settings (devices, time budget, progress bar) stay. Files written before a key existed
    resume with the current value of that key.

    Raises:
        RRSISError: nothing to resume from, or ``hparams.json`` is unreadable or damaged
            (one line naming the file and the problem).
    """
    if not (run.checkpoint_dir / "last.ckpt").is_file():
        raise RRSISError(f"{run.checkpoint_dir / 'last.ckpt'}: nothing to resume from")
    saved = read_record(run.hparams_path)
    if not isinstance(saved.get("train"), dict):
        raise RRSISError(f"{run.hparams_path}: has no 'train' recipe object (damaged?)")
    try:
        recipe = TrainConfig.from_dict(saved["train"])
        roots = [str(root) for root in saved.get("data_roots", run.data)]
    except RRSISError as err:
        raise RRSISError(f"{run.hparams_path}: {err}") from None
    except (TypeError, ValueError) as err:
        raise RRSISError(f"{run.hparams_path}: damaged recipe ({err})") from None
    return dataclasses.replace(
        run,
        recipe=recipe,
        data=roots,
        val=saved.get("val_root", run.val),
        preset=saved.get("preset", run.preset),
        tiny=saved.get("tiny", run.tiny),
        semantic_labels=saved.get("semantic_labels", run.semantic_labels),
    )
