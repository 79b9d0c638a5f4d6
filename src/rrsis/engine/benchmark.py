"""Benchmark orchestration: train (or load) several models with one recipe, test each once.

Layout of the output directory::

    table.md, table.csv       one row per model: Pr@0.5..0.9, oIoU, mIoU, small/medium/large
                              mIoU, single/scattered mIoU (test split)
    size_buckets.png          grouped bars: mIoU per object-size bucket, one bar per model
    command.txt               the exact command line and wall times
    results/<model>.json      full evaluate() result (breakdown and per-sample IoU) + .md
    runs/<model>/             training run (rrsis.engine.train layout, model.safetensors)

Every model is trained with the same recipe: :func:`rrsis.engine.presets.resolve_recipe` of the
preset, the model and the shared overrides (epochs, batch size, seed), in a
:class:`~rrsis.engine.config.TrainRun` like the one ``rrsis train`` builds.

Checkpoints are selected on the validation split by the engine; the test split is opened only
after training, once per model. A run directory that already holds ``model.safetensors`` is
reused, so an interrupted benchmark restarts where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rrsis.data.files import atomic_write, check_output, clean_stale_temps
from rrsis.engine.config import TrainRun
from rrsis.engine.datamodule import open_split, refuse_empty_split
from rrsis.engine.presets import resolve_recipe
from rrsis.engine.train import train
from rrsis.errors import ModelError, RRSISError
from rrsis.eval.evaluate import evaluate, open_dataset
from rrsis.eval.report import (
    benchmark_markdown,
    benchmark_row,
    evaluation_markdown,
    plot_size_buckets,
    write_csv,
    write_json,
)
from rrsis.models.io import input_size_from_json, load_model, weights_input_size
from rrsis.models.registry import list_models


def parse_models(spec: str) -> list[str]:
    """``"a,b,c"`` -> ``["a", "b", "c"]``; refuses empty and repeated names."""
    names = [name.strip() for name in spec.split(",")]
    if not spec.strip() or any(not name for name in names):
        raise RRSISError(f"--models must be a comma-separated list of names, got {spec!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RRSISError(f"--models names a model twice: {', '.join(repeated)}")
    return names


def parse_checkpoints(spec: str | None) -> dict[str, Path]:
    """``"a=path,b=path"`` -> ``{"a": Path, "b": Path}``; ``None`` or ``""`` -> ``{}``."""
    if not spec:
        return {}
    result: dict[str, Path] = {}
    for item in spec.split(","):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise RRSISError(f"--checkpoints entries must look like NAME=PATH, got {item!r}")
        if name.strip() in result:
            raise RRSISError(f"--checkpoints names {name.strip()!r} twice")
        result[name.strip()] = Path(path.strip())
    return result


def _write_text(path: Path, text: str) -> None:
    # A benchmark rerun into its folder refreshes its tables (finished runs are reused).
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _train_one(run: TrainRun) -> Path:
    """Train ``run`` (unless ``run.out`` already holds a finished model); return its weights."""
    weights = Path(run.out) / "model.safetensors"
    if weights.is_file():
        return weights
    train(run)
    if not weights.is_file():
        raise RRSISError(f"{run.out}: training finished without writing model.safetensors")
    return weights


def run_benchmark(
    models: Sequence[str],
    data_root: str | Path,
    out_dir: str | Path,
    epochs: int | None = None,
    checkpoints: Mapping[str, str | Path] | None = None,
    preset: str = "paper",
    batch_size: int | None = None,
    eval_batch_size: int = 8,
    protocol: str = "native",
    split: str = "test",
    data_format: str = "auto",
    device: str | None = None,
    tiny: bool = False,
    command: str | None = None,
    progress: bool = True,
    seed: int | None = None,
    max_steps: int = -1,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train or load each model, evaluate it on ``split`` and write the benchmark files.

    Args:
        models: model labels; a label without a checkpoint must be a registry name (trained).
        data_root: dataset root; ``train`` trains, ``val`` selects checkpoints, ``split`` scores.
        out_dir: output directory (see the module docstring).
        epochs: training epochs (``None`` = the preset's).
        checkpoints: ``{label: weights path}`` for models that are loaded instead of trained.
        preset: training recipe shared by every model (``paper`` or ``default``).
        batch_size: training batch size (``None`` = the preset's).
        eval_batch_size: batch size of evaluation.
        protocol: ``native`` or ``lavt`` (see :mod:`rrsis.eval.evaluate`).
        split: split to score (``test``).
        data_format: ``auto``, ``refsegrs`` or ``rrsisd`` (only RefSegRS trees can be trained on).
        device: evaluation device; ``None`` = CUDA when available.
        tiny: train tiny random-config models (tests and smoke runs).
        command: command line recorded in ``command.txt``.
        progress: show progress bars.
        seed: training seed (``None`` = the preset's).
        max_steps: stop each training run after this many optimiser steps (-1 = the epochs
            decide; smoke runs).
        log: receives one line per finished model.

    Returns:
        The table rows (:func:`rrsis.eval.report.benchmark_row`), in ``models`` order.
    """
    checkpoints = {k: Path(v) for k, v in (checkpoints or {}).items()}
    unknown = sorted(set(checkpoints) - set(models))
    if unknown:
        raise RRSISError(f"--checkpoints names models not in --models: {', '.join(unknown)}")
    to_train = [name for name in models if name not in checkpoints]
    if to_train:
        known = list_models()
        bad = [name for name in to_train if name not in known]
        if bad:
            raise ModelError(
                f"cannot train unknown model(s) {', '.join(bad)}; known: {', '.join(known)} "
                "(or give a checkpoint with --checkpoints NAME=PATH)"
            )
    for name, path in checkpoints.items():
        if not path.is_file():
            raise ModelError(f"{path}: checkpoint of {name!r} not found")
    data_root = Path(data_root)
    out = check_output(out_dir, overwrite=True, directory=True)
    clean_stale_temps(out, recursive=True)  # what runs killed while writing left behind
    # Open the scored split first: a wrong root or an empty split fails before hours of training.
    dataset = open_dataset(data_root, split, data_format)
    refuse_empty_split(dataset, data_root, split)
    if to_train:
        for part in ("train", "val"):
            refuse_empty_split(open_split(data_root, part), data_root, part)
    device = device or _default_device()
    # Built before any training, so a bad value fails before hours of work.
    runs = {
        name: TrainRun(
            data=[data_root],
            out=out / "runs" / name,
            recipe=resolve_recipe(preset, name, epochs=epochs, batch_size=batch_size, seed=seed),
            preset=preset,
            max_steps=max_steps,
            tiny=tiny,
            progress=progress,
        )
        for name in to_train
    }
    rows: list[dict[str, Any]] = []
    size_counts: dict[str, int] = {}
    timings: list[str] = []
    start = time.perf_counter()
    for name in models:
        model_start = time.perf_counter()
        input_size = None
        if name in checkpoints:
            weights = checkpoints[name]
            input_size = weights_input_size(weights)
            source = f"checkpoint {weights}"
        else:
            run_dir = Path(runs[name].out)
            weights = _train_one(runs[name])
            # Score at the size the model was trained at, not its architectural default.
            input_size = input_size_from_json(run_dir / "hparams.json")
            source = f"trained in {run_dir}"
        model = load_model(weights, map_location=device)
        result = evaluate(
            model,
            dataset,
            protocol=protocol,
            batch_size=eval_batch_size,
            device=device,
            progress=progress,
            input_size=input_size,
        )
        result.update({"label": name, "weights": str(weights), "data": str(data_root)})
        result["split"] = split
        write_json(result, out / "results" / f"{name}.json")
        _write_text(out / "results" / f"{name}.md", evaluation_markdown(result))
        rows.append(benchmark_row(name, result))
        # Every model sees the same split, hence the same bucket sizes.
        size_counts = {k: v["n"] for k, v in result["breakdown"].get("size", {}).items()}
        seconds = time.perf_counter() - model_start
        timings.append(f"{name}: {seconds:.1f} s ({source})")
        log(f"{name}: mIoU {result['overall']['mIoU']:.2f}, oIoU {result['overall']['oIoU']:.2f}")
        del model
    total = time.perf_counter() - start
    _write_text(
        out / "table.md",
        f"Benchmark on {data_root} ({split} split, protocol `{protocol}`, preset `{preset}`)\n\n"
        + benchmark_markdown(rows),
    )
    write_csv(rows, out / "table.csv")
    plot_size_buckets(rows, out / "size_buckets.png", counts=size_counts)
    lines = [
        command or "(library call)",
        "",
        f"wall time: {total:.1f} s",
        f"evaluation device: {device}",
        *timings,
    ]
    _write_text(out / "command.txt", "\n".join(lines) + "\n")
    return rows
