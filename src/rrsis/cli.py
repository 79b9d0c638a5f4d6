"""The ``rrsis`` command line: one entry point, subcommands registered by each sub-package.

Each sub-package that offers commands has a ``cli.py`` with ``register(subparsers)``; this
module only collects them, runs the chosen handler, and turns :class:`RRSISError` into a
one-line message and a non-zero exit code (tracebacks only with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rrsis import __version__
from rrsis.errors import RRSISError

# Sub-packages that add subcommands. A missing module is skipped so that the CLI keeps
# working while a part of the package is absent.
_COMMAND_MODULES = (
    "rrsis.data.cli",
    "rrsis.models.cli",
    "rrsis.engine.cli",
    "rrsis.eval.cli",
    "rrsis.infer.cli",
)


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
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
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
