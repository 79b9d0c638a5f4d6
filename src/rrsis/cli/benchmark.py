"""``rrsis benchmark``: train (or load) several models with one recipe and score them on test.

The command does not select checkpoints itself: the engine selects on the validation split and
the test split is scored once per model (``docs/protocol.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rrsis.cli.options import add_dataset_args, add_device_arg, add_progress_arg, command_line
from rrsis.data.files import check_output
from rrsis.eval.report import benchmark_markdown


def run_benchmark_cli(args: argparse.Namespace) -> int:
    # Lightning is imported only when this command runs: the other commands stay fast.
    from rrsis.engine.benchmark import parse_checkpoints, parse_models, run_benchmark

    # Before Lightning is imported or any data is read (one line, exit 2).
    check_output(args.out, overwrite=True, directory=True)
    models = parse_models(args.models)
    checkpoints = parse_checkpoints(args.checkpoints)
    rows = run_benchmark(
        models,
        args.data,
        args.out,
        epochs=args.epochs,
        checkpoints=checkpoints,
        preset=args.preset,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        protocol=args.protocol,
        data_format=args.format,
        device=args.device,
        tiny=args.tiny,
        command=command_line(args),
        progress=args.progress,
        seed=args.seed,
        max_steps=args.max_steps,
    )
    print(benchmark_markdown(rows), end="")
    print(f"wrote {Path(args.out)}/table.md, table.csv, size_buckets.png, command.txt")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``benchmark`` to the ``rrsis`` command."""
    bench = subparsers.add_parser(
        "benchmark",
        help="train (or load) several models with one recipe and compare them on test",
        description=(
            "For each model: train with one recipe (checkpoint selected on val) or load the "
            "given checkpoint, score the test split once, and write table.md, table.csv, "
            "size_buckets.png and command.txt into --out. Finished runs are reused."
        ),
    )
    bench.add_argument("--models", required=True, help="comma-separated names, e.g. lavt_x,lgce_x")
    add_dataset_args(bench, "dataset root (train/val/test)")
    bench.add_argument("--out", required=True, type=Path, help="output directory")
    bench.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    bench.add_argument("--checkpoints", metavar="NAME=PATH,...", help="load instead of training")
    bench.add_argument("--preset", choices=("paper", "default"), default="paper")
    bench.add_argument("--batch-size", type=int, help="training batch size per device")
    bench.add_argument("--eval-batch-size", type=int, default=8)
    bench.add_argument("--protocol", choices=("native", "lavt"), default="native")
    add_device_arg(bench, default=None)
    bench.add_argument("--seed", type=int, help="training seed (default: the preset's)")
    bench.add_argument("--max-steps", type=int, default=-1, help=argparse.SUPPRESS)
    bench.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    add_progress_arg(bench)
    bench.set_defaults(func=run_benchmark_cli, _parser=bench)
