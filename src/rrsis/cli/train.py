"""``rrsis train``: build a :class:`~rrsis.engine.config.TrainRun` and call the engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from rrsis.cli.options import add_progress_arg
from rrsis.engine.config import TrainRun, check_run_dir
from rrsis.engine.presets import PRESETS, resolve_recipe
from rrsis.errors import RRSISError

#: Options that set a recipe field of the same name (``None`` = keep the preset's value).
RECIPE_OPTIONS = (
    "epochs",
    "batch_size",
    "lr",
    "input_size",
    "seed",
    "workers",
    "freeze_vision",
    "semantic_weight",
    "photometric",
    "balance",
    "preload",
    "precision",
)

# Data of the shipped model's recipe, as written by scripts/train_default.py.
DEFAULT_DATA = ("data/dubai", "data/synth")
DEFAULT_VAL = "data/dubai"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model on RefSegRS-format data",
        description=(
            "Train on the train splits of one or more RefSegRS-format roots, select the "
            "checkpoint on a val split (never test), export model.safetensors + hparams.json."
        ),
    )
    parser.add_argument("--model", help="registry name (default: the preset's model)")
    parser.add_argument(
        "--init",
        metavar="WEIGHTS",
        help="fine-tune: start from trained weights instead of the registry's initialisation: "
        "'default' (the shipped model) or a .safetensors file written by rrsis",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="ROOT",
        help=f"dataset roots whose train splits are used (preset default: {' '.join(DEFAULT_DATA)})",
    )
    parser.add_argument(
        "--val-data", metavar="ROOT", help="root of the val split (default: first --data)"
    )
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="default",
        help=(
            "default: CPU recipe of the shipped model; paper: RRSIS paper recipe; finetune: "
            "default at lr 2e-4 for 6 epochs, for --init on a few labelled images of your area"
        ),
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="per device")
    parser.add_argument("--lr", type=float, help="learning rate of the new layers")
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--devices", default="1", help="number of devices (or 'auto')")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-time", metavar="HH:MM:SS", help="stop training after this wall time")
    parser.add_argument(
        "--fit-to-time",
        action="store_true",
        help="with --max-time: after each epoch, end the run early on an epoch boundary if the "
        "planned epochs do not fit the time left, with the lr schedule shortened to complete",
    )
    parser.add_argument("--max-steps", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help="DataLoader workers per device")
    parser.add_argument(
        "--precision",
        help="Lightning precision: auto (default: bf16-mixed on GPUs with bfloat16, else fp32), "
        "32-true (fp32, as LAVT trained), bf16-mixed, 16-mixed",
    )
    parser.add_argument(
        "--freeze-vision",
        action="store_true",
        default=None,
        help="keep the image encoder frozen (faster on CPU)",
    )
    parser.add_argument(
        "--semantic-labels",
        metavar="DUBAI_DIR",
        type=Path,
        help="Dubai source tree (tileN/masks): adds an auxiliary loss on every training "
        "crop's full class map (see docs/model-card.md)",
    )
    parser.add_argument(
        "--semantic-weight",
        type=float,
        help="weight of that loss (default 0.5 with --semantic-labels)",
    )
    parser.add_argument(
        "--photometric",
        type=float,
        metavar="S",
        help="random brightness/contrast/saturation in [1-S, 1+S] for expressions naming no "
        "colour (default: the preset's; 0 = off)",
    )
    parser.add_argument(
        "--balance",
        type=float,
        metavar="B",
        help="draw training samples with weight count(category)^-B, B in [0, 1] (0.5 = inverse "
        "square root, 1 = categories equally often; default: the preset's, 0 = off)",
    )
    parser.add_argument(
        "--preload",
        action="store_true",
        default=None,
        help="decode and resize every sample once and keep it in RAM (a faster loader; about "
        "0.5 MB per sample at 320x320)",
    )
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    add_progress_arg(parser)
    parser.set_defaults(func=run)


def build_run(args: argparse.Namespace) -> TrainRun:
    """The :class:`TrainRun` of parsed ``rrsis train`` options (checked, nothing started)."""
    data, val = args.data, args.val_data
    if not data and not args.resume:
        if args.preset != "default":
            raise RRSISError(f"--data is required with --preset {args.preset}")
        data, val = list(DEFAULT_DATA), val or DEFAULT_VAL
    overrides = {name: getattr(args, name) for name in RECIPE_OPTIONS}
    if args.semantic_labels is not None and overrides["semantic_weight"] is None:
        overrides["semantic_weight"] = 0.5
    chosen = {name for name, value in overrides.items() if value is not None}
    return TrainRun(
        data=data or [],
        out=args.out,
        recipe=resolve_recipe(args.preset, args.model, **overrides),
        val=val,
        preset=args.preset,
        init=args.init,
        recipe_fields=chosen | ({"model_name"} if args.model else set()),
        resume=args.resume,
        semantic_labels=args.semantic_labels,
        devices=args.devices,
        accelerator=args.accelerator,
        strategy=args.strategy,
        max_time=args.max_time,
        fit_to_time=args.fit_to_time,
        max_steps=args.max_steps,
        tiny=args.tiny,
        progress=args.progress,
    )


def run(args: argparse.Namespace) -> int:
    train_run = build_run(args)
    check_run_dir(train_run)  # before Lightning is imported or any data is read
    # Lightning is imported only once a run starts: the other commands and --help stay fast.
    from rrsis.engine.train import train

    best = train(train_run)
    print(f"best checkpoint: {best}")
    print(f"model: {Path(args.out) / 'model.safetensors'}")
    return 0
