"""``rrsis data stats | show | export``: inspect and convert dataset trees.

Handlers raise :class:`rrsis.errors.RRSISError` subclasses for user mistakes; ``rrsis.cli``
turns them into one line on stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rrsis.cli.options import (
    add_overwrite_arg,
    add_progress_arg,
    check_outputs,
    with_one_line_warnings,
)
from rrsis.data.files import atomic_write
from rrsis.data.formats import FORMATS, compute_stats, detect_format, format_table, open_splits
from rrsis.data.refsegrs import RefSegRS, available_splits
from rrsis.data.refsegrs_writer import export_refsegrs
from rrsis.data.rrsisd import RRSISD, rrsisd_splits
from rrsis.errors import DatasetError


def _cmd_stats(args: argparse.Namespace) -> int:
    stats = compute_stats(open_splits(Path(args.root), args.format))
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_table(stats))
    return 0


def _savefig(figure, dpi: int):
    return lambda tmp: figure.savefig(tmp, dpi=dpi)


def _cmd_show(args: argparse.Namespace) -> int:
    root, output = Path(args.root), Path(args.output)
    check_outputs(output, overwrite=args.overwrite)
    fmt = detect_format(root) if args.format == "auto" else args.format
    splits = (
        [args.split]
        if args.split
        else (available_splits(root) if fmt == "refsegrs" else rrsisd_splits(root))
    )
    for split in splits:
        dataset = RefSegRS(root, split) if fmt == "refsegrs" else RRSISD(root, split)
        if args.id in dataset.ids:
            sample = dataset[dataset.ids.index(args.id)]
            figure = dataset.plot(sample)
            # The temporary name keeps the suffix: savefig picks the format from it.
            atomic_write(output, _savefig(figure, args.dpi), overwrite=args.overwrite)
            print(f"{args.id} ({split}): {sample['text']} -> {output}")
            return 0
    raise DatasetError(f"id {args.id!r} not found in split(s) {', '.join(splits)}", root)


def _cmd_export(args: argparse.Namespace) -> int:
    source = Path(args.source)
    check_outputs(args.output, overwrite=args.overwrite, directory=True)
    datasets = open_splits(source, args.format)
    # Bars only on a terminal unless --no-progress hides them everywhere.
    progress = None if args.progress else False
    counts = export_refsegrs(datasets, args.output, overwrite=args.overwrite, progress=progress)
    summary = ", ".join(f"{split} {n}" for split, n in counts.items())
    print(f"wrote RefSegRS tree {args.output}: {summary}")
    return 0


def register(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``stats``, ``show`` and ``export`` to the ``rrsis data`` subcommands."""
    fmt_help = "dataset format of the input tree (default: detected)"

    stats = data_subparsers.add_parser(
        "stats", help="counts, kinds, object sizes and scatter per split"
    )
    stats.add_argument("root", help="dataset directory (RefSegRS or RRSIS-D)")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--format", choices=("auto", *FORMATS), default="auto", help=fmt_help)
    stats.set_defaults(func=with_one_line_warnings(_cmd_stats))

    show = data_subparsers.add_parser(
        "show", help="draw one sample (image, mask overlay, expression)"
    )
    show.add_argument("root", help="dataset directory")
    show.add_argument("id", help="sample id (searched in every split unless --split)")
    show.add_argument(
        "-o", "--output", required=True, help="image file to write (.png, .jpg, .pdf)"
    )
    show.add_argument("--split", help="only look in this split")
    show.add_argument("--format", choices=("auto", *FORMATS), default="auto", help=fmt_help)
    show.add_argument("--dpi", type=int, default=100, help="resolution of the figure")
    add_overwrite_arg(show)
    show.set_defaults(func=with_one_line_warnings(_cmd_show))

    export = data_subparsers.add_parser("export", help="convert a dataset tree to RefSegRS format")
    export.add_argument("source", help="input dataset directory")
    export.add_argument("output", help="output directory (absent or empty unless --overwrite)")
    export.add_argument("--format", choices=FORMATS, required=True, help="format of the input tree")
    add_overwrite_arg(export)
    add_progress_arg(export)
    export.set_defaults(func=with_one_line_warnings(_cmd_export))
