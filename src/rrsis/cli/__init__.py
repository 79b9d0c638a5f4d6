"""The ``rrsis`` command line: one entry point, one module per group of subcommands.

Each module of this package (``data``, ``models``, ``train``, ``evaluate``, ``predict``,
``predict_batch``, ``serve``, ``export``) has ``register(subparsers)``; options that several commands share come
from :mod:`rrsis.cli.options`. The commands parse arguments, build the library's typed
configuration and call it; this module runs the chosen handler and turns :class:`RRSISError`
into a one-line message and exit code 2 (tracebacks only with ``--debug``).
"""

from __future__ import annotations

import argparse
import sys

from rrsis import __version__
from rrsis.cli import (
    benchmark,
    data,
    evaluate,
    export,
    models,
    predict,
    predict_batch,
    serve,
    train,
)
from rrsis.errors import RRSISError

COMMAND_MODULES = (data, models, train, evaluate, benchmark, predict, predict_batch, serve, export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrsis",
        description="Referring remote sensing image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"rrsis {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except RRSISError as err:
        if args.debug:
            raise
        print(f"rrsis: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rrsis: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
