"""``rrsis data synth | from-labels | dubai``: build RefSegRS-format datasets from label maps."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rrsis.cli.options import add_bands_arg, add_overwrite_arg, add_progress_arg, check_outputs
from rrsis.data.dubai import convert_dubai
from rrsis.data.from_labels import convert_label_maps
from rrsis.data.synthetic import build_synthetic_dataset
from rrsis.data.taxonomy import Taxonomy
from rrsis.errors import DatasetError


def register(data_subparsers: argparse._SubParsersAction) -> None:
    """Add the builder commands to ``rrsis data``."""
    synth = data_subparsers.add_parser(
        "synth", help="procedural aerial scenes -> RefSegRS-format triplets"
    )
    synth.add_argument("out", type=Path, help="output directory")
    synth.add_argument("--n", type=int, default=200, help="number of triplets (approximate)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=512, help="scene side in pixels")
    add_overwrite_arg(synth)
    add_progress_arg(synth)
    synth.set_defaults(func=_synth)

    labels = data_subparsers.add_parser(
        "from-labels", help="images + semantic label maps + taxonomy.json -> triplets"
    )
    labels.add_argument("images_dir", type=Path)
    labels.add_argument(
        "labels_dir", type=Path, help="label PNGs (class ids or colours), same stems"
    )
    labels.add_argument("out", type=Path)
    labels.add_argument("--taxonomy", type=Path, required=True, help="taxonomy JSON")
    labels.add_argument(
        "--crop",
        type=int,
        default=512,
        help="cut each image into crops of this side (default 512; 0 = keep images whole)",
    )
    labels.add_argument(
        "--stride",
        type=int,
        default=None,
        help="largest step between crops (default: the crop side; e.g. 128 for dense training)",
    )
    labels.add_argument(
        "--splits",
        type=float,
        nargs=3,
        default=(0.7, 0.15, 0.15),
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of the images per split, drawn from a hash of each file name",
    )
    labels.add_argument(
        "--split-file",
        type=Path,
        default=None,
        help="lines '<image stem> <train|val|test>' instead of --splits (split by image/area)",
    )
    labels.add_argument("--seed", type=int, default=0)
    add_overwrite_arg(labels)
    add_progress_arg(labels)
    add_bands_arg(labels)
    labels.set_defaults(func=_from_labels)

    dubai = data_subparsers.add_parser("dubai", help="convert the CC0 Dubai aerial set")
    dubai.add_argument("src", type=Path, help="directory holding tile1 ... tile6")
    dubai.add_argument("out", type=Path)
    dubai.add_argument("--crop", type=int, default=512)
    dubai.add_argument("--stride", type=int, default=512)
    dubai.add_argument("--seed", type=int, default=0)
    add_overwrite_arg(dubai)
    add_progress_arg(dubai)
    dubai.set_defaults(func=_dubai)


def _report(out: Path, counts: dict[str, dict[str, int]], start: float) -> None:
    total = sum(sum(c.values()) for c in counts.values())
    print(f"wrote {total} triplets to {out} in {time.perf_counter() - start:.1f} s")
    for split, by_kind in counts.items():
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items()))
        print(f"  {split}: {sum(by_kind.values())} ({kinds})")


def _synth(args: argparse.Namespace) -> int:
    if args.n <= 0 or args.size < 64:
        raise DatasetError(f"need --n > 0 and --size >= 64, got {args.n} and {args.size}")
    check_outputs(args.out, overwrite=args.overwrite, directory=True)
    start = time.perf_counter()
    counts = build_synthetic_dataset(
        args.out,
        args.n,
        seed=args.seed,
        size=args.size,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    _report(args.out, counts, start)
    return 0


def _dubai(args: argparse.Namespace) -> int:
    check_outputs(args.out, overwrite=args.overwrite, directory=True)
    start = time.perf_counter()
    counts = convert_dubai(
        args.src,
        args.out,
        crop=args.crop,
        stride=args.stride,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    _report(args.out, counts, start)
    return 0


def _from_labels(args: argparse.Namespace) -> int:
    check_outputs(args.out, overwrite=args.overwrite, directory=True)
    taxonomy = Taxonomy.load(args.taxonomy)
    start = time.perf_counter()
    counts = convert_label_maps(
        args.images_dir,
        args.labels_dir,
        args.out,
        taxonomy,
        crop=args.crop,
        stride=args.stride,
        splits=args.splits,
        split_file=args.split_file,
        seed=args.seed,
        overwrite=args.overwrite,
        bands=args.bands,
        progress=args.progress,
    )
    _report(args.out, counts, start)
    return 0
