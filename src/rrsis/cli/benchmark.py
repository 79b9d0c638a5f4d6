"""``rrsis benchmark``: train several models with one recipe over seeds and compare them on test.

The command builds a :class:`~rrsis.engine.benchmark_config.BenchmarkConfig` from its options
and hands it to :func:`rrsis.engine.benchmark.run_benchmark`. It does not select checkpoints
itself: the engine selects on the validation split and the test split is scored once per run,
network alone (``docs/protocol.md``).

Examples::

    # reduced CPU budget: the four EfficientNet-Lite0 + MiniLM families, 2 seeds
    rrsis benchmark --budget cpu --seeds 0,1 --data data/dubai --out bench/cpu
    # a family more beside them (the same recipe): name it
    rrsis benchmark --budget cpu --seeds 0,1 --data data/dubai --out bench/cpu \\
        --add-models rmsin_effnet_minilm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rrsis.cli.options import add_dataset_args, add_device_arg, add_progress_arg, command_line
from rrsis.data.files import check_output
from rrsis.engine.benchmark_config import (
    BUDGETS,
    BenchmarkConfig,
    parse_list,
    parse_pairs,
    parse_seeds,
)


def model_arg_value(text: str) -> Any:
    """A ``--model-arg`` value: JSON when it parses (``true``, ``0.1``, ``[1, 2]``), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_config(args: argparse.Namespace) -> BenchmarkConfig:
    """The :class:`BenchmarkConfig` of parsed ``rrsis benchmark`` options (checked)."""
    models = parse_list(args.models, "--models")
    extra = parse_list(args.add_models, "--add-models")
    if extra:
        base = models or (list(BUDGETS[args.budget].models) if args.budget else [])
        models = [*base, *extra]
    return BenchmarkConfig(
        data=args.data,
        out=args.out,
        models=tuple(models),
        budget=args.budget,
        preset=args.preset,
        seeds=tuple(parse_seeds(args.seeds)),
        reference=args.reference,
        epochs=args.epochs,
        batch_size=args.batch_size,
        input_size=args.input_size,
        model_kwargs={
            k: model_arg_value(v) for k, v in parse_pairs(args.model_arg, "--model-arg").items()
        },
        checkpoints=parse_pairs(args.checkpoints, "--checkpoints"),
        eval_batch_size=args.eval_batch_size,
        protocol=args.protocol,
        data_format=args.format,
        device=args.device,
        resamples=args.resamples,
        tiny=args.tiny,
        max_steps=args.max_steps,
        progress=args.progress,
        command=command_line(args),
    )


def run_benchmark_cli(args: argparse.Namespace) -> int:
    config = build_config(args)
    # Before Lightning is imported or any data is read (one line, exit 2).
    check_output(args.out, overwrite=True, directory=True)
    # Lightning is imported only when this command runs: the other commands stay fast.
    from rrsis.engine.benchmark import run_benchmark
    from rrsis.eval.benchmark_report import tables_markdown

    tables = run_benchmark(config)
    print(tables_markdown(tables, f"{config.split} split, network alone"), end="")
    print(f"wrote {Path(args.out)}/table.md, table.csv, paired.csv, size_scatter.png, command.txt")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``benchmark`` to the ``rrsis`` command."""
    bench = subparsers.add_parser(
        "benchmark",
        help="train several models with one recipe over seeds and compare them on test",
        description=(
            "For each model and seed: train with one recipe (checkpoint selected on val) or "
            "load the given checkpoint, score the test split once (network alone), and write "
            "table.md, table.csv (mean ± sd over seeds), paired.csv (difference with the "
            "reference model, 95 %% interval over test images and seeds, by size and scatter), "
            "size_scatter.png and command.txt into --out. Finished runs are reused; an "
            "interrupted run continues from its last checkpoint."
        ),
    )
    bench.add_argument(
        "--models", help="comma-separated names, e.g. lavt_x,lgce_x (default: the budget's)"
    )
    bench.add_argument(
        "--add-models", metavar="NAMES", help="models run beside --models (or the budget's)"
    )
    add_dataset_args(bench, "dataset root (train/val/test)")
    bench.add_argument("--out", required=True, type=Path, help="output directory")
    bench.add_argument(
        "--budget",
        choices=tuple(BUDGETS),
        help="; ".join(f"{b.name}: {b.summary}" for b in BUDGETS.values()),
    )
    bench.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1 or 0-2 (default 0)")
    bench.add_argument(
        "--reference", help="model the others are compared with (default: the first)"
    )
    bench.add_argument("--epochs", type=int, help="training epochs (default: the budget's)")
    bench.add_argument("--input-size", type=int, help="training and scoring image side")
    bench.add_argument("--batch-size", type=int, help="training batch size per device")
    bench.add_argument(
        "--model-arg",
        metavar="KEY=VALUE,...",
        help="factory arguments of every trained model, e.g. pretrained=swin.pth",
    )
    bench.add_argument("--checkpoints", metavar="NAME=PATH,...", help="load instead of training")
    bench.add_argument(
        "--preset", choices=("paper", "rmsin", "default"), default="paper", help="recipe without --budget"
    )
    bench.add_argument("--eval-batch-size", type=int, default=8)
    bench.add_argument("--protocol", choices=("native", "lavt"), default="native")
    bench.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    add_device_arg(bench, default=None)
    bench.add_argument("--max-steps", type=int, default=-1, help=argparse.SUPPRESS)
    bench.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    add_progress_arg(bench)
    bench.set_defaults(func=run_benchmark_cli, _parser=bench)
