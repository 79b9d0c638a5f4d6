"""Your own images + semantic label maps -> RefSegRS-format referring triplets.

This is ``rrsis data from-labels``: the builder of :mod:`rrsis.data.builder` applied to any
labelled imagery, given a taxonomy JSON (class ids or palette colours, objects, relations).

* **Crops.** Each image is cut into ``crop`` x ``crop`` windows at most ``stride`` apart, the last
  one flush with the border (no padding), like ``rrsis data dubai``; a side shorter than
  ``crop`` is kept whole. ``crop=0`` keeps every image whole (one set of triplets per image).
  Models are trained on square inputs resized to a few hundred pixels, so a whole 5000 px
  label raster is not a useful training sample: crop large images.
* **Splits are by image, never by crop.** Every crop of an image lands in the split of its
  image, so neighbouring crops (which share pixels when ``stride < crop``) never sit on both
  sides of a split. The split comes from a ``split_file`` (``stem split`` per line, the way to
  keep an area out of training) or, without one, from a hash of the file name drawn with the
  ``splits`` fractions (stable when files are added or removed).
* **Meta.** Every sample records ``source`` (the image's stem) and ``crop_yx`` (the crop's
  origin in the image); ids are ``<stem>_y<Y>_x<X>_<k>`` (``<stem>_<k>`` with ``crop=0``).
* **Label maps** are PNG/TIFF/GeoTIFF with one band of class ids (any integer type) or RGB
  colours matched exactly against the taxonomy's palette; they must have the image's size.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from rrsis.data.builder import CROP_CONFIG, BuildConfig, build_triplets
from rrsis.data.dubai import crop_origins
from rrsis.data.io import read_image, read_raw
from rrsis.data.refsegrs_writer import RefSegRSWriter
from rrsis.data.taxonomy import Taxonomy
from rrsis.errors import DatasetError, ImageReadError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SPLITS = ("train", "val", "test")


def read_label_map(path: Path, taxonomy: Taxonomy) -> np.ndarray:
    """``(H, W)`` int ids from a label image: class ids (1 band / palette PNG) or colours (RGB).

    TIFFs (GeoTIFF class rasters included) are read with tifffile, so 16- and 32-bit ids work.
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        array = read_raw(path)
    else:
        try:
            with Image.open(path) as img:
                array = np.asarray(img)
        except Exception as err:  # Pillow raises many types for corrupt files
            raise ImageReadError(f"cannot decode label image ({type(err).__name__})", path) from err
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
            raise ImageReadError(f"label ids must be integers, got {array.dtype}", path)
        return array.astype(np.int64)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if not taxonomy.palette:
            raise DatasetError("colour label image but the taxonomy JSON has no palette", path)
        return taxonomy.labels_from_colours(array[..., :3])
    raise ImageReadError(f"label image must be 1-band or RGB, got shape {array.shape}", path)


def read_split_file(path: Path) -> dict[str, str]:
    """``{stem: split}`` from lines ``stem split`` (or ``stem,split``); ``#`` starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("split file not found", path)
    assignment: dict[str, str] = {}
    # utf-8-sig: a leading byte-order mark would otherwise stick to the first stem.
    for number, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = raw.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in SPLITS:
            raise DatasetError(
                f"line {number}: expected '<image stem> <train|val|test>', got {raw.strip()!r}",
                path,
            )
        stem, split = fields
        if assignment.get(stem, split) != split:
            raise DatasetError(f"line {number}: {stem!r} is in two splits", path)
        assignment[stem] = split
    if not assignment:
        raise DatasetError("split file lists no images", path)
    return assignment


def _hash_split(stem: str, splits: Sequence[float]) -> str:
    probs = np.asarray(splits, dtype=float)
    edges = np.cumsum(probs / probs.sum())
    u = (zlib.crc32(stem.encode()) % 10_000) / 10_000
    return SPLITS[int(np.searchsorted(edges, u, side="right").clip(0, 2))]


def crop_windows(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(y, x, height, width)`` of the crops covering an ``h`` x ``w`` image (module docstring)."""
    if crop == 0:
        return [(0, 0, h, w)]
    ch, cw = min(crop, h), min(crop, w)
    return [
        (y, x, ch, cw) for y in crop_origins(h, crop, stride) for x in crop_origins(w, crop, stride)
    ]


def convert_label_maps(
    images_dir: str | Path,
    labels_dir: str | Path,
    out: str | Path,
    taxonomy: Taxonomy,
    crop: int = 512,
    stride: int | None = None,
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    split_file: str | Path | None = None,
    seed: int = 0,
    overwrite: bool = False,
    config: BuildConfig | None = None,
    bands: Sequence[int] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, int]]:
    """Build a RefSegRS tree at ``out`` from ``images_dir`` + ``labels_dir`` (same stems).

    Args:
        crop: crop side in pixels; 0 = whole images. ``stride``: largest step between crops
            (default ``crop``: no overlap; e.g. ``crop // 4`` for dense training crops).
        splits: train/val/test fractions, drawn per image from a hash of its name.
        split_file: ``stem split`` lines instead (every image must be listed).
        config: builder rules; default :data:`rrsis.data.builder.CROP_CONFIG` for crops, the builder's defaults
            for whole images.
        bands: 1-based band numbers read as red, green, blue from multispectral images
            (:func:`rrsis.data.io.read_image`); ``None``: 1, 3 or 4 bands as usual.

    Returns:
        ``{split: {kind: count}}`` of what was written.

    Raises:
        DatasetError: missing folder or label map, bad split file, size mismatch, bad ``crop``.
        OutputExistsError: ``out`` is not empty and ``overwrite`` is false.
    """
    from tqdm.auto import tqdm

    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    if crop < 0 or (0 < crop < 32):
        raise DatasetError(f"crop must be 0 (whole images) or at least 32 px, got {crop}")
    stride = crop if stride is None else stride
    if crop and not 0 < stride <= crop:
        raise DatasetError(f"stride must be in 1..crop ({crop}), got {stride}")
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DatasetError("directory not found", folder)
    probs = np.asarray(splits, dtype=float)
    if probs.shape != (3,) or (probs < 0).any() or probs.sum() <= 0:
        raise DatasetError(f"splits must be 3 non-negative numbers with a positive sum: {splits}")
    labels_by_stem = {
        p.stem: p for p in sorted(labels_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
    }
    images = [p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise DatasetError("no images found (.png, .jpg, .tif)", images_dir)
    assignment = read_split_file(split_file) if split_file is not None else None
    if assignment is not None:
        stems = {p.stem for p in images}
        missing = [p.stem for p in images if p.stem not in assignment]
        if missing:
            raise DatasetError(f"{len(missing)} images not in the split file, e.g. {missing[0]!r}")
        unknown = sorted(set(assignment) - stems)
        if unknown:
            raise DatasetError(f"split file names images not found: {', '.join(unknown[:3])}")
    for path in images:
        if path.stem not in labels_by_stem:
            raise DatasetError("no label map with this image's name", path)
    if config is None:
        config = CROP_CONFIG if crop else BuildConfig()

    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    with RefSegRSWriter(out, overwrite=overwrite) as writer:
        for image_path in tqdm(images, unit="image", desc="from-labels", disable=not progress):
            stem = image_path.stem
            image = read_image(image_path, bands=bands)
            labels = read_label_map(labels_by_stem[stem], taxonomy)
            if labels.shape != image.shape[:2]:
                raise DatasetError(
                    f"label map is {labels.shape}, image is {image.shape[:2]}",
                    labels_by_stem[stem],
                )
            split = assignment[stem] if assignment is not None else _hash_split(stem, probs)
            for y, x, ch, cw in crop_windows(*labels.shape, crop, stride):
                crop_image = image[y : y + ch, x : x + cw]
                crop_labels = labels[y : y + ch, x : x + cw]
                samples = build_triplets(crop_image, crop_labels, taxonomy, rng, config, stem)
                for k, sample in enumerate(samples):
                    sample["id"] = f"{stem}_y{y}_x{x}_{k}" if crop else f"{stem}_{k}"
                    sample["meta"]["crop_yx"] = [y, x]
                    writer.add(split, sample)
                    kind = sample["meta"]["kind"]
                    counts[split][kind] = counts[split].get(kind, 0) + 1
    return counts
