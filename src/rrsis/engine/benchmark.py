"""Benchmark orchestration: train every model with one recipe per seed, score each run once.

Layout of the output directory::

    table.md, table.csv       per model: mean and spread over seeds of Pr@0.5..0.9, oIoU, mIoU,
                              small/medium/large and single/scattered mIoU, best val mIoU and
                              the val gain over the last third of epochs; table.md also holds
                              the paired differences with the reference model
    paired.csv                per model and subset: mIoU minus the reference's, 95 % interval
    size_scatter.png          per-model mIoU by size bucket and by scatter, 95 % interval bars
    benchmark.json            the configuration, the rows, the paired differences, timings
    command.txt               the exact command line and wall times
    results/<model>/seed-<k>.json, .md   full evaluation of each run (breakdown, per sample)
    runs/<model>/seed-<k>/    training run (rrsis.engine.train layout, model.safetensors)

Every model is trained with the same recipe (:meth:`BenchmarkConfig.recipe`: the budget's or
preset's, the same epochs, size and data) once per seed; the engine selects each checkpoint on
the validation split, and the test split is opened only after training, once per run. Scores
are the **network alone**: evaluation runs with no composition rules (``compose="none"``).

The benchmark resumes: a run directory that holds ``model.safetensors`` is reused (after
checking that its recorded recipe is the one asked for), one that holds ``last.ckpt`` continues
from it, and a run's evaluation file newer than its weights is reused, so an interrupted
benchmark restarts where it stopped. Runs are made seed by seed (every model's seed 0 first).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rrsis.data.files import atomic_write, check_output, clean_stale_temps
from rrsis.engine.benchmark_config import BenchmarkConfig
from rrsis.engine.config import TrainRun, read_record
from rrsis.engine.datamodule import open_split, refuse_empty_split
from rrsis.engine.train import resolve_precision, train
from rrsis.errors import ModelError, RRSISError
from rrsis.eval.benchmark_report import BenchmarkTables, summarise, write_tables
from rrsis.eval.evaluate import evaluate, open_dataset
from rrsis.eval.report import evaluation_markdown, write_json
from rrsis.models.io import input_size_from_json, load_model, weights_input_size
from rrsis.models.registry import list_models

#: Recipe fields that may differ between a reused run and the one asked for (they change how
#: fast a run goes, not what it computes).
RUNTIME_FIELDS = ("workers", "ckpt_every_n_steps")
CHECKPOINT_RUN = "checkpoint"


def run_name(seed: int | None) -> str:
    """``seed-<k>`` for a trained run, ``checkpoint`` for a loaded one."""
    return CHECKPOINT_RUN if seed is None else f"seed-{seed}"


def _write_text(path: Path, text: str) -> None:
    # A benchmark rerun into its folder refreshes its tables (finished runs are reused).
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)


def _check_models(config: BenchmarkConfig) -> None:
    known = list_models()
    bad = [name for name in config.trained if name not in known]
    if bad:
        raise ModelError(
            f"cannot train unknown model(s) {', '.join(bad)}; known: {', '.join(known)} "
            "(or give a checkpoint with --checkpoints NAME=PATH)"
        )
    for name, path in config.checkpoints.items():
        if not Path(path).is_file():
            raise ModelError(f"{path}: checkpoint of {name!r} not found")


def _same_recipe(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Names of the recipe fields that differ (runtime-only fields ignored)."""
    keys = (set(saved) | set(wanted)) - set(RUNTIME_FIELDS)
    return sorted(k for k in keys if saved.get(k) != wanted.get(k))


def _check_reused(run: TrainRun) -> None:
    """Refuse to reuse a run directory trained with another recipe."""
    saved = read_record(run.hparams_path).get("train")
    if not isinstance(saved, dict):
        raise RRSISError(f"{run.hparams_path}: has no 'train' recipe object (damaged?)")
    wanted = json.loads(json.dumps(run.recipe.to_dict()))
    # "auto" precision is what the run resolves it to (fp32 on a CPU), as the saved run did.
    for recipe in (saved, wanted):
        if "precision" in recipe:
            recipe["precision"] = resolve_precision(recipe["precision"], run.accelerator)
    differ = _same_recipe(saved, wanted)
    if differ:
        raise RRSISError(
            f"{run.out} holds a run of another recipe ({', '.join(differ)} differ): "
            "use another --out, or the options it was made with"
        )


def train_or_reuse(run: TrainRun) -> Path:
    """Weights of ``run``: reused when finished, resumed from ``last.ckpt``, else trained."""
    weights = Path(run.out) / "model.safetensors"
    if weights.is_file() or (run.checkpoint_dir / "last.ckpt").is_file():
        _check_reused(run)
    if not weights.is_file():
        resume = (run.checkpoint_dir / "last.ckpt").is_file()
        train(dataclasses.replace(run, resume=resume))
    if not weights.is_file():
        raise RRSISError(f"{run.out}: training finished without writing model.safetensors")
    return weights


def validation_curve(run_dir: Path) -> list[float]:
    """Validation mIoU per epoch of a training run (``logs/metrics.csv``), in order."""
    path = Path(run_dir) / "logs" / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/mIoU")]
    by_epoch: dict[int, float] = {}
    for row in rows:
        by_epoch[int(float(row.get("epoch") or 0))] = float(row["val/mIoU"])
    return [by_epoch[k] for k in sorted(by_epoch)]


def _fresh(result_path: Path, weights: Path, config: BenchmarkConfig) -> dict[str, Any] | None:
    """A run's earlier evaluation when it is newer than its weights and scored the same way."""
    if not result_path.is_file() or result_path.stat().st_mtime < weights.stat().st_mtime:
        return None
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = (result.get("protocol"), result.get("split"), result.get("data"))
    return result if same == (config.protocol, config.split, str(config.data)) else None


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = print) -> BenchmarkTables:
    """Train (or load) every model once per seed, score each run on ``config.split``, and write
    the benchmark files (module docstring).

    Returns:
        The tables written (:class:`rrsis.eval.benchmark_report.BenchmarkTables`).

    Raises:
        RRSISError: unknown model, missing checkpoint, empty split, or a run directory that
            holds a run of another recipe (before any training starts).
    """
    _check_models(config)
    out = check_output(config.out, overwrite=True, directory=True)
    clean_stale_temps(out, recursive=True)  # what runs killed while writing left behind
    # Open the scored split first: a wrong root or an empty split fails before hours of training.
    dataset = open_dataset(config.data, config.split, config.data_format)
    refuse_empty_split(dataset, config.data, config.split)
    if config.trained:
        for part in ("train", "val"):
            refuse_empty_split(open_split(config.data, part), config.data, part)
    device = config.device or _default_device()
    # Every run built (and every reused run checked) before any training: a bad value or a
    # folder of another recipe fails before hours of work.
    runs: dict[tuple[str, int], TrainRun] = {}
    for seed in config.seeds:
        for name in config.trained:
            runs[name, seed] = TrainRun(
                data=[config.data],
                out=out / "runs" / name / run_name(seed),
                recipe=config.recipe(name, seed),
                preset=config.preset,
                max_steps=config.max_steps,
                tiny=config.tiny,
                progress=config.progress,
            )
            if (runs[name, seed].hparams_path).is_file():
                _check_reused(runs[name, seed])
    order: list[tuple[str, int | None]] = [
        (n, None) for n in config.models if n not in config.trained
    ]
    order += [(name, seed) for seed in config.seeds for name in config.trained]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in config.models}
    timings: list[str] = []
    start = time.perf_counter()
    for name, seed in order:
        run_start = time.perf_counter()
        if seed is None:
            weights = Path(config.checkpoints[name])
            input_size, source, curve = weights_input_size(weights), f"checkpoint {weights}", []
        else:
            run_dir = Path(runs[name, seed].out)
            weights = train_or_reuse(runs[name, seed])
            # Score at the size the model was trained at, not its architectural default.
            input_size = input_size_from_json(run_dir / "hparams.json")
            source, curve = f"trained in {run_dir}", validation_curve(run_dir)
        result_path = out / "results" / name / f"{run_name(seed)}.json"
        result = _fresh(result_path, weights, config)
        if result is None:
            model = load_model(weights, map_location=device)
            result = evaluate(
                model,
                dataset,
                protocol=config.protocol,
                batch_size=config.eval_batch_size,
                device=device,
                progress=config.progress,
                input_size=input_size,
                resamples=config.resamples,
                compose="none",  # the network alone: what compares with published methods
            )
            del model
            result.update({"label": name, "seed": seed, "weights": str(weights)})
            result.update({"data": str(config.data), "split": config.split})
            result["val_curve"] = curve
            write_json(result, result_path)
            _write_text(result_path.with_suffix(".md"), evaluation_markdown(result))
        results[name].append(result)
        seconds = time.perf_counter() - run_start
        timings.append(f"{name} {run_name(seed)}: {seconds:.1f} s ({source})")
        log(
            f"{name} {run_name(seed)}: mIoU {result['overall']['mIoU']:.2f}, "
            f"oIoU {result['overall']['oIoU']:.2f} (network alone, {config.split} split)"
        )
    tables = summarise(results, config.reference, resamples=config.resamples)
    header = (
        f"Benchmark on {config.data}, {config.split} split, network alone (no composition "
        f"rules), protocol `{config.protocol}`; {config.describe()}; seeds "
        f"{', '.join(str(s) for s in config.seeds)}."
    )
    total = time.perf_counter() - start
    seeds = ",".join(str(s) for s in config.seeds)
    title = f"{config.data.name}, {config.split} split, network alone; seeds {seeds}"
    write_tables(tables, out, header, plot_title=f"{title}; {config.describe()}")
    lines = [
        config.command or "(library call)",
        "",
        f"wall time: {total:.1f} s (runs reused from an earlier start count their reuse only)",
        f"evaluation device: {device}",
        *timings,
    ]
    _write_text(out / "command.txt", "\n".join(lines) + "\n")
    write_json(
        {
            "header": header,
            "config": {
                "models": list(config.models),
                "seeds": list(config.seeds),
                "reference": config.reference,
                "budget": config.budget,
                "preset": config.preset,
                "recipe": {
                    name: config.recipe(name, config.seeds[0]).to_dict() for name in config.trained
                },
                "split": config.split,
                "protocol": config.protocol,
                "scores": "network alone",
                "resamples": config.resamples,
            },
            **tables.to_dict(),
            "wall_s": round(total, 1),
            "timings": timings,
        },
        out / "benchmark.json",
    )
    return tables
