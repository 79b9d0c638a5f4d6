"""``rrsis data stats | show | export``: inspect and convert dataset trees.

Handlers raise :class:`rrsis.errors.RRSISError` subclasses for user mistakes; ``rrsis.cli``
turns them into one line on stderr.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from rrsis.data.io import read_mask
from rrsis.data.refsegrs import RefSegRS, available_splits, export_refsegrs
from rrsis.data.rrsisd import RRSISD, rrsisd_splits
from rrsis.data.stats import (
    COMPONENT_BUCKETS,
    SIZE_BUCKETS,
    component_bucket,
    object_stats,
    size_bucket,
)
from rrsis.errors import DatasetError, OutputExistsError

FORMATS = ("refsegrs", "rrsisd")
KINDS = ("category", "attribute", "relation", "position", "unknown")


def _kind_guesser():
    """``rrsis.data.builder.infer_kind`` when available, else a function returning ``unknown``."""
    try:
        from rrsis.data.builder import infer_kind
    except ImportError:
        return lambda expression: "unknown"
    return infer_kind


def detect_format(root: Path) -> str:
    """``refsegrs`` if ``root`` has phrase files, ``rrsisd`` if it has a refs pickle.

    Raises:
        DatasetError: ``root`` is missing or neither layout is found.
    """
    if not root.is_dir():
        raise DatasetError("dataset root directory not found", root)
    if available_splits(root):
        return "refsegrs"
    if any((base / "refs(unc).p").is_file() for base in (root, root / "rrsisd")):
        return "rrsisd"
    raise DatasetError(
        "not a RefSegRS tree (no output_phrase_*.txt) nor RRSIS-D (no refs(unc).p)", root
    )


def open_splits(root: Path, fmt: str = "auto") -> dict[str, Any]:
    """Open every split of a dataset tree as ``{split: dataset}``."""
    fmt = detect_format(root) if fmt == "auto" else fmt
    if fmt == "refsegrs":
        splits = available_splits(root)
        if not splits:
            raise DatasetError("not a RefSegRS tree: no output_phrase_<split>.txt", root)
        return {split: RefSegRS(root, split) for split in splits}
    return {split: RRSISD(root, split) for split in rrsisd_splits(root)}


def _sample_stats(dataset: Any, index: int) -> tuple[dict[str, Any], str]:
    """Meta (with object stats) and expression of one sample, reading as little as possible."""
    if isinstance(dataset, RefSegRS):
        meta = dataset.meta_of(index)
        if "area_frac" not in meta or "n_components" not in meta:
            mask = read_mask(dataset.mask_path(dataset.ids[index]), dataset.mask_threshold)
            meta.update(object_stats(mask))
        return meta, dataset.expressions[index]
    sample = dataset[index]
    return sample["meta"], sample["text"]


def compute_stats(datasets: dict[str, Any], progress: bool | None = None) -> dict[str, Any]:
    """Counts, kind, object-size and component histograms per split and in total.

    Args:
        datasets: ``{split: dataset}``.
        progress: tqdm bar; ``None`` shows it only on a terminal.

    Returns:
        ``{"splits": {split: {"n", "kind", "size", "components"}}, "total": {...}}``; size
        buckets are small < 1 %, medium 1-10 %, large > 10 % of the image; component buckets
        1, 2-5, > 5.
    """
    from tqdm import tqdm

    guess_kind = _kind_guesser()
    result: dict[str, Any] = {"splits": {}}
    totals = {"n": 0, "kind": Counter(), "size": Counter(), "components": Counter()}
    for split, dataset in datasets.items():
        kinds, sizes, comps = Counter(), Counter(), Counter()
        for index in tqdm(
            range(len(dataset)),
            desc=f"stats {split}",
            disable=None if progress is None else not progress,
        ):
            meta, text = _sample_stats(dataset, index)
            kinds[meta.get("kind") or guess_kind(text)] += 1
            sizes[size_bucket(float(meta["area_frac"]))] += 1
            comps[component_bucket(int(meta["n_components"]))] += 1
        entry = {
            "n": len(dataset),
            "kind": {k: kinds[k] for k in KINDS if kinds[k]}
            | {k: v for k, v in kinds.items() if k not in KINDS},
            "size": {b: sizes[b] for b in SIZE_BUCKETS},
            "components": {b: comps[b] for b in COMPONENT_BUCKETS},
        }
        result["splits"][split] = entry
        totals["n"] += entry["n"]
        for key in ("kind", "size", "components"):
            totals[key].update(entry[key])
    result["total"] = {
        "n": totals["n"],
        "kind": dict(totals["kind"]),
        "size": {b: totals["size"][b] for b in SIZE_BUCKETS},
        "components": {b: totals["components"][b] for b in COMPONENT_BUCKETS},
    }
    return result


def format_table(stats: dict[str, Any]) -> str:
    """Plain-text table of :func:`compute_stats` output, one row per split plus a total."""
    kinds = sorted(
        {k for row in [*stats["splits"].values(), stats["total"]] for k in row["kind"]},
        key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k),
    )
    header = [
        "split",
        "n",
        *kinds,
        *(f"size:{b}" for b in SIZE_BUCKETS),
        *(f"comp:{b}" for b in COMPONENT_BUCKETS),
    ]
    rows = []
    for name, row in [*stats["splits"].items(), ("total", stats["total"])]:
        rows.append(
            [
                name,
                str(row["n"]),
                *(str(row["kind"].get(k, 0)) for k in kinds),
                *(str(row["size"][b]) for b in SIZE_BUCKETS),
                *(str(row["components"][b]) for b in COMPONENT_BUCKETS),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))
        )
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def _cmd_stats(args: argparse.Namespace) -> int:
    stats = compute_stats(open_splits(Path(args.root), args.format))
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_table(stats))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    root, output = Path(args.root), Path(args.output)
    if output.exists() and not args.overwrite:
        raise OutputExistsError(f"{output}: exists (use --overwrite to replace it)")
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
            output.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(output, dpi=args.dpi)
            print(f"{args.id} ({split}): {sample['text']} -> {output}")
            return 0
    raise DatasetError(f"id {args.id!r} not found in split(s) {', '.join(splits)}", root)


def _cmd_export(args: argparse.Namespace) -> int:
    source = Path(args.source)
    datasets = open_splits(source, args.format)
    counts = export_refsegrs(datasets, args.output, overwrite=args.overwrite, progress=None)
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
    stats.set_defaults(func=_cmd_stats)

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
    show.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    show.set_defaults(func=_cmd_show)

    export = data_subparsers.add_parser("export", help="convert a dataset tree to RefSegRS format")
    export.add_argument("source", help="input dataset directory")
    export.add_argument("output", help="output directory (absent or empty unless --overwrite)")
    export.add_argument("--format", choices=FORMATS, required=True, help="format of the input tree")
    export.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty output directory"
    )
    export.set_defaults(func=_cmd_export)
