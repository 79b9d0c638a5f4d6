"""``rrsis data ...``: build (synth, from-labels, dubai), inspect and convert (stats, show, export)."""

from __future__ import annotations

import argparse

from rrsis.cli import data_build, data_format


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="build, inspect and convert datasets")
    data_sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    data_format.register(data_sub)
    data_build.register(data_sub)
