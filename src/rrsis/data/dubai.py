"""Dubai aerial imagery (CC0, Humans in the Loop) -> RefSegRS-format referring triplets.

The source tree is ``tileN/images/image_part_00K.jpg`` + ``tileN/masks/image_part_00K.png``
(N = 1..6, colour-coded masks). Tiles are different places, so splits are by tile
(default train 1-4, val 5, test 6) and never by crop.

Cropping: each part is cut into ``crop`` x ``crop`` windows evenly spaced at most ``stride``
apart, the last one flush with the border, so every pixel is covered and no padding is
invented. A part shorter than ``crop`` on a side (tile 2 is 509 px wide) is first resized up
so that side equals ``crop`` (bilinear image, nearest-neighbour labels): the at most 1 %
stretch is invisible, whereas padding would add fake unlabeled borders and skipping would
drop a whole tile.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from rrsis.data.builder import CROP_CONFIG, BuildConfig, build_triplets
from rrsis.data.io import read_image
from rrsis.data.refsegrs_writer import RefSegRSWriter
from rrsis.data.taxonomy import Relation, Taxonomy
from rrsis.errors import DatasetError

UNLABELED = 0
DUBAI_COLOURS: dict[str, tuple[int, int, int]] = {
    "building": (60, 16, 152),
    "unpaved land": (132, 41, 246),
    "road": (110, 193, 228),
    "vegetation": (254, 221, 58),
    "water": (226, 169, 41),
}
# Grey (155,155,155) and black (about 1 % of pixels) are unlabeled, as is any colour not above.

DUBAI_TAXONOMY = Taxonomy(
    classes={name: i + 1 for i, name in enumerate(DUBAI_COLOURS)},
    # No inclusion groups: the five classes do not nest ("impervious surface" would need
    # paved areas other than roads, which this labelling folds into buildings or land).
    synonyms={"unpaved land": ["bare land", "sand"], "water": ["water body"]},
    # Only buildings are countable objects at this resolution; vegetation and water patches
    # get positions but no "large"/"long" (a "long water" is not how anyone speaks).
    objects=("building",),
    # Roof colour (white warehouses vs grey blocks) is visible and worth naming.
    colour_names=("building",),
    relations=(
        Relation("building", "along", "road"),
        Relation("vegetation", "near", "building"),
        Relation("vegetation", "along", "road"),
        Relation("vegetation", "beside", "water"),
        Relation("building", "near", "water"),
        Relation("water", "near", "building"),
        Relation("building", "near", "vegetation"),
        Relation("building", "beside", "unpaved land"),
        Relation("unpaved land", "beside", "water"),
    ),
    palette=dict(DUBAI_COLOURS),
    ignore_ids=(UNLABELED,),
)

DEFAULT_SPLITS: dict[str, list[int]] = {"train": [1, 2, 3, 4], "val": [5], "test": [6]}


def labels_from_colours(rgb_mask: np.ndarray) -> np.ndarray:
    """Exact-match a Dubai colour mask ``(H, W, 3)`` to int32 ids ``(H, W)`` (0 = unlabeled)."""
    labels = DUBAI_TAXONOMY.labels_from_colours(rgb_mask)
    labels[labels < 0] = UNLABELED
    return labels


def crop_origins(length: int, crop: int, stride: int) -> list[int]:
    """Window starts covering ``[0, length)`` with windows ``crop`` long, at most ``stride`` apart."""
    if length <= crop:
        return [0]
    n = math.ceil((length - crop) / stride) + 1
    return [round(i * (length - crop) / (n - 1)) for i in range(n)]


def _fit_size(h: int, w: int, crop: int) -> tuple[int, int] | None:
    """PIL ``(width, height)`` that makes both sides at least ``crop``; ``None`` = keep."""
    scale = max(crop / h, crop / w, 1.0)
    if scale == 1.0:
        return None
    return (max(crop, round(w * scale)), max(crop, round(h * scale)))


def _fit_labels(labels: np.ndarray, crop: int) -> np.ndarray:
    """Labels resized (nearest neighbour) as :func:`_fit` resizes them."""
    size = _fit_size(*labels.shape, crop)
    if size is None:
        return labels
    labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize(size, Image.NEAREST))
    return labels.astype(np.int32)


def _fit(image: np.ndarray, labels: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize up so that both sides are at least ``crop`` (see module docstring)."""
    size = _fit_size(*labels.shape, crop)
    if size is None:
        return image, labels
    image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    return image, _fit_labels(labels, crop)


def iter_parts(src: str | Path, tiles: list[int]) -> Iterator[tuple[int, Path, Path]]:
    """``(tile, image_path, mask_path)`` of every part of the given tiles, sorted."""
    src = Path(src)
    if not src.is_dir():
        raise DatasetError("Dubai source directory not found", src)
    for tile in tiles:
        image_dir = src / f"tile{tile}" / "images"
        images = sorted(image_dir.glob("*.jpg"))
        if not images:
            raise DatasetError("no image parts (*.jpg) found", image_dir)
        for image_path in images:
            mask_path = src / f"tile{tile}" / "masks" / f"{image_path.stem}.png"
            if not mask_path.is_file():
                raise DatasetError("mask missing for image part", mask_path)
            yield tile, image_path, mask_path


def iter_crops(
    image_path: Path, mask_path: Path, crop: int, stride: int
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(y, x, image crop (crop, crop, 3), labels crop (crop, crop))`` of one part."""
    image = read_image(image_path)
    labels = labels_from_colours(read_image(mask_path))
    if image.shape[:2] != labels.shape:
        raise DatasetError(f"image is {image.shape[:2]} but mask is {labels.shape}", mask_path)
    image, labels = _fit(image, labels, crop)
    h, w = labels.shape
    for y in crop_origins(h, crop, stride):
        for x in crop_origins(w, crop, stride):
            yield y, x, image[y : y + crop, x : x + crop], labels[y : y + crop, x : x + crop]


def convert_dubai(
    src: str | Path,
    out: str | Path,
    crop: int = 512,
    stride: int = 512,
    split_tiles: dict[str, list[int]] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    max_parts: int | None = None,
    progress: bool = False,
    config: BuildConfig | None = None,
) -> dict[str, dict[str, int]]:
    """Convert the Dubai tree at ``src`` into a RefSegRS dataset at ``out``.

    Args:
        src: directory with ``tile1`` ... ``tile6``.
        out: output directory (must be empty unless ``overwrite``).
        crop: square crop side; ``stride``: largest step between crops.
        split_tiles: split -> tile numbers; a tile may appear in one split only.
        seed: seeds the builder's random choices (same seed, same dataset).
        max_parts: use at most this many parts per tile (for quick tests).
        progress: show a tqdm bar.
        config: builder settings; ``None`` = modest per-crop caps (at most 6 expressions per
            crop, 2 per kind) that keep the 512/512 set near 1,400 triplets with kinds balanced.

    Returns:
        ``{split: {kind: count}}`` of what was written. ``meta.source`` is
        ``"tileN/image_part_00K"``; ids are ``tileN_partK_yY_xX_i``.
    """
    from tqdm import tqdm

    split_tiles = split_tiles or DEFAULT_SPLITS
    owner: dict[int, str] = {}
    for split, tiles in split_tiles.items():
        for tile in tiles:
            if tile in owner:
                raise DatasetError(f"tile {tile} is in both {owner[tile]!r} and {split!r} splits")
            owner[tile] = split
    parts = []
    for split, tiles in split_tiles.items():
        for tile in tiles:
            tile_parts = list(iter_parts(src, [tile]))[:max_parts]
            parts += [(split, *p) for p in tile_parts]

    # Dubai objects are larger than SkyScapes vehicles; modest per-crop caps keep the set
    # in the few-hundred-to-2000 range and the kinds balanced.
    config = config or CROP_CONFIG
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {s: {} for s in split_tiles}
    with RefSegRSWriter(out, overwrite=overwrite) as writer:
        for split, tile, image_path, mask_path in tqdm(
            parts, disable=not progress, unit="part", desc="dubai"
        ):
            source = f"tile{tile}/{image_path.stem}"
            part_no = image_path.stem.rsplit("_", 1)[-1]
            for y, x, image, labels in iter_crops(image_path, mask_path, crop, stride):
                samples = build_triplets(image, labels, DUBAI_TAXONOMY, rng, config, source)
                for k, sample in enumerate(samples):
                    sample["id"] = f"tile{tile}_part{part_no}_y{y}_x{x}_{k}"
                    sample["meta"]["crop_yx"] = [y, x]
                    writer.add(split, sample)
                    kind = sample["meta"]["kind"]
                    counts[split][kind] = counts[split].get(kind, 0) + 1
    return counts


class DubaiLabelLookup:
    """Class maps of Dubai crops, cut from the source tree by a sample's ``meta``.

    :func:`convert_dubai` records each sample's part (``meta["source"]``, ``"tileN/image_part_00K"``)
    and crop origin (``meta["crop_yx"]``), so the full label map of the crop, every class and
    not only the referred object, can be recovered without storing it in the RefSegRS tree.
    Training uses it for an auxiliary semantic loss (see ``rrsis.engine.auxiliary``).

    Args:
        src: the Dubai source directory (``tile1`` ... ``tile6``).
        max_cached: parts kept in memory (a part is at most about 1.3 MB of labels).

    Calling it with ``(meta, shape)`` returns the crop's ids ``(H, W)`` uint8 (0 = unlabeled,
    ``DUBAI_TAXONOMY.classes`` otherwise), or ``None`` when the sample does not come from
    this tree (no ``source``/``crop_yx``, unknown part, or a crop that does not fit).
    """

    num_classes = len(DUBAI_COLOURS)

    def __init__(self, src: str | Path, max_cached: int = 128) -> None:
        self.src = Path(src)
        if not self.src.is_dir():
            raise DatasetError("Dubai source directory not found", self.src)
        self.max_cached = max_cached
        self._cache: dict[tuple[str, int], np.ndarray | None] = {}

    def _part(self, source: str, crop: int) -> np.ndarray | None:
        key = (source, crop)
        if key not in self._cache:
            tile, _, stem = source.partition("/")
            path = self.src / tile / "masks" / f"{stem}.png"
            labels = None
            if tile.startswith("tile") and stem and path.is_file():
                labels = _fit_labels(labels_from_colours(read_image(path)), crop).astype(np.uint8)
            if len(self._cache) >= self.max_cached:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = labels
        return self._cache[key]

    def __call__(self, meta: dict, shape: tuple[int, int]) -> np.ndarray | None:
        source, origin = meta.get("source"), meta.get("crop_yx")
        if not isinstance(source, str) or not origin or len(origin) != 2:
            return None
        h, w = int(shape[0]), int(shape[1])
        if h != w:
            return None
        labels = self._part(source, h)
        if labels is None:
            return None
        y, x = int(origin[0]), int(origin[1])
        out = labels[y : y + h, x : x + w]
        return out if out.shape == (h, w) else None
