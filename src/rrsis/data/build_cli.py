"""``rrsis data synth | from-labels | dubai``: build RefSegRS-format datasets from label maps."""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from rrsis.errors import DatasetError, ImageReadError

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def register(data_subparsers: argparse._SubParsersAction) -> None:
    """Add the builder commands to ``rrsis data``."""
    synth = data_subparsers.add_parser(
        "synth", help="procedural aerial scenes -> RefSegRS-format triplets"
    )
    synth.add_argument("out", type=Path, help="output directory")
    synth.add_argument("--n", type=int, default=200, help="number of triplets (approximate)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=512, help="scene side in pixels")
    synth.add_argument("--overwrite", action="store_true")
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
        "--splits", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST")
    )
    labels.add_argument("--seed", type=int, default=0)
    labels.add_argument("--overwrite", action="store_true")
    labels.set_defaults(func=_from_labels)

    dubai = data_subparsers.add_parser("dubai", help="convert the CC0 Dubai aerial set")
    dubai.add_argument("src", type=Path, help="directory holding tile1 ... tile6")
    dubai.add_argument("out", type=Path)
    dubai.add_argument("--crop", type=int, default=512)
    dubai.add_argument("--stride", type=int, default=512)
    dubai.add_argument("--seed", type=int, default=0)
    dubai.add_argument("--overwrite", action="store_true")
    dubai.set_defaults(func=_dubai)


def _report(out: Path, counts: dict[str, dict[str, int]], start: float) -> None:
    total = sum(sum(c.values()) for c in counts.values())
    print(f"wrote {total} triplets to {out} in {time.perf_counter() - start:.1f} s")
    for split, by_kind in counts.items():
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items()))
        print(f"  {split}: {sum(by_kind.values())} ({kinds})")


def _synth(args: argparse.Namespace) -> int:
    from rrsis.data.synthetic import build_synthetic_dataset

    if args.n <= 0 or args.size < 64:
        raise DatasetError(f"need --n > 0 and --size >= 64, got {args.n} and {args.size}")
    start = time.perf_counter()
    counts = build_synthetic_dataset(
        args.out, args.n, seed=args.seed, size=args.size, overwrite=args.overwrite, progress=True
    )
    _report(args.out, counts, start)
    return 0


def _dubai(args: argparse.Namespace) -> int:
    from rrsis.data.dubai import convert_dubai

    start = time.perf_counter()
    counts = convert_dubai(
        args.src,
        args.out,
        crop=args.crop,
        stride=args.stride,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=True,
    )
    _report(args.out, counts, start)
    return 0


def read_label_map(path: Path, taxonomy) -> np.ndarray:
    """``(H, W)`` int ids from a label image: class ids (1 band/palette) or colours (RGB)."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except Exception as err:  # Pillow raises many types for corrupt files
        raise ImageReadError(f"cannot decode label image ({type(err).__name__})", path) from err
    if array.ndim == 2:
        return array.astype(np.int32)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if not taxonomy.palette:
            raise DatasetError("colour label image but the taxonomy JSON has no palette", path)
        return taxonomy.labels_from_colours(array[..., :3])
    raise ImageReadError(f"label image must be 1-band or RGB, got shape {array.shape}", path)


def _from_labels(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rrsis.data.builder import build_triplets
    from rrsis.data.io import read_image
    from rrsis.data.refsegrs import RefSegRSWriter
    from rrsis.data.taxonomy import Taxonomy

    taxonomy = Taxonomy.load(args.taxonomy)
    if not args.images_dir.is_dir():
        raise DatasetError("images directory not found", args.images_dir)
    labels_by_stem = {
        p.stem: p for p in sorted(args.labels_dir.glob("*")) if p.suffix.lower() in _IMAGE_SUFFIXES
    }
    images = [p for p in sorted(args.images_dir.glob("*")) if p.suffix.lower() in _IMAGE_SUFFIXES]
    if not images:
        raise DatasetError("no images found", args.images_dir)
    probs = np.asarray(args.splits, dtype=float)
    if (probs < 0).any() or probs.sum() <= 0:
        raise DatasetError(f"--splits must be non-negative with a positive sum, got {args.splits}")
    edges = np.cumsum(probs / probs.sum())
    rng = np.random.default_rng(args.seed)
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}, "test": {}}
    start = time.perf_counter()
    with RefSegRSWriter(args.out, overwrite=args.overwrite) as writer:
        for image_path in tqdm(images, unit="image", desc="from-labels"):
            if image_path.stem not in labels_by_stem:
                raise DatasetError("no label map with this image's name", image_path)
            image = read_image(image_path)
            labels = read_label_map(labels_by_stem[image_path.stem], taxonomy)
            if labels.shape != image.shape[:2]:
                raise DatasetError(
                    f"label map is {labels.shape}, image is {image.shape[:2]}",
                    labels_by_stem[image_path.stem],
                )
            # Split by a hash of the file name: stable when files are added or removed.
            u = (zlib.crc32(image_path.stem.encode()) % 10_000) / 10_000
            split = ("train", "val", "test")[
                int(np.searchsorted(edges, u, side="right").clip(0, 2))
            ]
            for sample in build_triplets(image, labels, taxonomy, rng, source=image_path.stem):
                writer.add(split, sample)
                kind = sample["meta"]["kind"]
                counts[split][kind] = counts[split].get(kind, 0) + 1
    _report(args.out, counts, start)
    return 0
