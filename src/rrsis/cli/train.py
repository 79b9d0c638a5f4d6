"""``rrsis train``: thin wrapper over :func:`rrsis.engine.train.train`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rrsis.engine.presets import PRESETS

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
        help="fine-tune: start from a model file written by rrsis (.safetensors; 'default' = "
        "the shipped default model) instead of the registry's initialisation",
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
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rrsis.engine.train import train

    data = args.data
    val = args.val_data
    if not data and not args.resume:
        if args.preset != "default":
            from rrsis.errors import RRSISError

            raise RRSISError("--data is required with --preset paper")
        data, val = list(DEFAULT_DATA), val or DEFAULT_VAL
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    semantic_weight = args.semantic_weight
    if args.semantic_labels is not None and semantic_weight is None:
        semantic_weight = 0.5
    best = train(
        args.model,
        data or [],
        args.out,
        val_root=val,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        input_size=args.input_size,
        devices=devices,
        accelerator=args.accelerator,
        strategy=args.strategy,
        seed=args.seed,
        resume=args.resume,
        preset=args.preset,
        max_time=args.max_time,
        workers=args.workers,
        max_steps=args.max_steps,
        tiny=args.tiny,
        progress_bar=not args.no_progress,
        freeze_vision=args.freeze_vision,
        semantic_labels=args.semantic_labels,
        semantic_weight=semantic_weight,
        photometric=args.photometric,
        balance=args.balance,
        preload=args.preload,
        fit_to_time=args.fit_to_time,
        init=args.init,
    )
    print(f"best checkpoint: {best}")
    print(f"model: {Path(args.out) / 'model.safetensors'}")
    return 0
