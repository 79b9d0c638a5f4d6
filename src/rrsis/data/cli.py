"""``rrsis data ...`` subcommands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="build, inspect and convert datasets")
    data_sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    # Format commands (stats, show, export) live in rrsis.data.format_cli; builder commands
    # (synth, from-labels, dubai) in rrsis.data.build_cli. Each registers its own parsers.
    for module_name in ("rrsis.data.format_cli", "rrsis.data.build_cli"):
        import importlib

        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        module.register(data_sub)
