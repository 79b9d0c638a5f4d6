"""RefSegRS (Yuan et al., TGRS 2024): reader and writer of the exact on-disk format.

Layout::

    ROOT/images/<id>.tif              RGB image (PackBits TIFF in the release)
    ROOT/masks/<id>.tif               single-channel mask, foreground 255
    ROOT/output_phrase_<split>.txt    one "<id> <expression>" per line, split = train|val|test
    ROOT/meta_<split>.jsonl           our optional extension: {"id": ..., <meta>} per line

The id is everything before the first whitespace of a line, the expression everything after
it. Text files are UTF-8; a leading byte-order mark (which some Windows editors write) is
dropped. Real RefSegRS trees have no ``meta_*.jsonl``; they load unchanged, with object
statistics computed from the mask. The writer of the format is
:class:`rrsis.data.refsegrs_writer.RefSegRSWriter`.
"""

from __future__ import annotations

import codecs
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rrsis.data.io import image_shape, read_image, read_mask, resize_mask
from rrsis.data.plot import plot_sample
from rrsis.data.stats import object_stats
from rrsis.errors import DatasetError, DataWarning

Sample = dict[str, Any]

SPLITS = ("train", "val", "test")
#: Mask pixels above this are foreground, as in the reference RefSegRS loaders (``> 50``).
MASK_THRESHOLD = 50
_PHRASE_FILE = re.compile(r"^output_phrase_(.+)\.txt$")


def phrase_file(root: str | Path, split: str) -> Path:
    """Path of the expression file of ``split`` under ``root``."""
    return Path(root) / f"output_phrase_{split}.txt"


def meta_file(root: str | Path, split: str) -> Path:
    """Path of our optional per-sample metadata file of ``split`` under ``root``."""
    return Path(root) / f"meta_{split}.jsonl"


def available_splits(root: str | Path) -> list[str]:
    """Splits that have an ``output_phrase_<split>.txt`` under ``root`` (train, val, test first)."""
    found = [
        m.group(1)
        for p in Path(root).glob("output_phrase_*.txt")
        if (m := _PHRASE_FILE.match(p.name))
    ]
    return sorted(found, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Decode ``path`` line by line as UTF-8 (a leading byte-order mark dropped); returns
    ``(1-based line number, text)`` pairs."""
    lines = []
    # A leading byte-order mark would otherwise become part of the first id.
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    # Universal newlines (\n, \r\n and old-Mac \r), as Python's text mode reads the file.
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DatasetError(f"line is not valid UTF-8 ({err.reason})", path, number) from err
        lines.append((number, text))
    return lines


def _parse_phrases(path: Path) -> tuple[list[str], list[str], list[int]]:
    """Parse an ``output_phrase`` file into ids, expressions and their line numbers."""
    ids: list[str] = []
    expressions: list[str] = []
    line_numbers: list[int] = []
    first_seen: dict[str, int] = {}
    for number, text in _read_lines(path):
        if not text.strip():
            continue
        parts = text.strip().split(None, 1)
        sample_id = parts[0]
        if "/" in sample_id or "\\" in sample_id:
            # Ids become file names; a separator would read files outside images/ and masks/.
            raise DatasetError(
                f"invalid id {sample_id!r} (contains a path separator)", path, number
            )
        expression = parts[1].strip() if len(parts) > 1 else ""
        if not expression:
            raise DatasetError(f"id {sample_id!r} has an empty expression", path, number)
        if sample_id in first_seen:
            raise DatasetError(
                f"duplicate id {sample_id!r} (first on line {first_seen[sample_id]})", path, number
            )
        first_seen[sample_id] = number
        ids.append(sample_id)
        expressions.append(expression)
        line_numbers.append(number)
    return ids, expressions, line_numbers


def _parse_meta(path: Path) -> dict[str, dict[str, Any]]:
    """Parse a ``meta_<split>.jsonl`` file into ``{id: meta}``."""
    metas: dict[str, dict[str, Any]] = {}
    for number, text in _read_lines(path):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"invalid JSON ({err.msg})", path, number) from err
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise DatasetError('each line must be a JSON object with a string "id"', path, number)
        sample_id = record.pop("id")
        if sample_id in metas:
            raise DatasetError(f"duplicate id {sample_id!r}", path, number)
        metas[sample_id] = record
    return metas


class RefSegRS:
    """Map-style dataset over one split of a RefSegRS tree.

    Args:
        root: dataset directory (holding ``images/``, ``masks/``, ``output_phrase_*.txt``).
        split: ``train``, ``val`` or ``test`` (any split with a phrase file is accepted).
        transforms: optional callable applied to each sample dict.
        mask_threshold: mask pixels ``> mask_threshold`` are foreground; 50 as in the
            reference loaders (the released masks are 0/255, where any threshold agrees).

    Attributes:
        ids: sample ids in file order.
        expressions: expressions aligned with ``ids``.

    Each item is ``{"image": uint8 (H, W, 3), "mask": bool (H, W), "text": str, "id": str,
    "meta": dict}``; ``meta`` always holds ``area_frac`` and ``n_components``.

    Raises:
        DatasetError: missing root or split file, malformed line, missing image or mask
            (checked here, cheaply). A mask whose size differs from its image is resized to
            it (nearest) with one :class:`~rrsis.errors.DataWarning` per split, as the
            reference loaders accept it. An empty split opens (``len`` 0); what scores or
            trains on it refuses it (:func:`rrsis.data.formats.require_samples`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[Sample], Sample] | None = None,
        mask_threshold: float = MASK_THRESHOLD,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.mask_threshold = mask_threshold
        self._warned_size = False
        if not self.root.is_dir():
            raise DatasetError("RefSegRS root directory not found", self.root)
        self.phrase_path = phrase_file(self.root, split)
        if not self.phrase_path.is_file():
            known = ", ".join(available_splits(self.root)) or "none"
            raise DatasetError(
                f"split file for {split!r} not found (splits present: {known})", self.phrase_path
            )
        self.ids, self.expressions, self._lines = _parse_phrases(self.phrase_path)
        for sample_id, number in zip(self.ids, self._lines):
            for kind, path in (
                ("image", self.image_path(sample_id)),
                ("mask", self.mask_path(sample_id)),
            ):
                if not path.is_file():
                    raise DatasetError(
                        f"{kind} of id {sample_id!r} not found: {path}", self.phrase_path, number
                    )
        meta_path = meta_file(self.root, split)
        self._metas = _parse_meta(meta_path) if meta_path.is_file() else {}

    def image_path(self, sample_id: str) -> Path:
        """Path of the image of ``sample_id``."""
        return self.root / "images" / f"{sample_id}.tif"

    def mask_path(self, sample_id: str) -> Path:
        """Path of the mask of ``sample_id``."""
        return self.root / "masks" / f"{sample_id}.tif"

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        """Load sample ``index`` (see the class docstring for the dict layout)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sample_id = self.ids[index]
        image = read_image(self.image_path(sample_id))
        mask = self.mask_at(index, image.shape[:2])
        meta = dict(self._metas.get(sample_id, {}))
        if "area_frac" not in meta or "n_components" not in meta:
            meta.update(object_stats(mask))
        sample: Sample = {
            "image": image,
            "mask": mask,
            "text": self.expressions[index],
            "id": sample_id,
            "meta": meta,
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def mask_at(self, index: int, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """Mask of sample ``index`` as ``bool (H, W)`` at the size of its image.

        Args:
            index: sample index.
            image_size: ``(height, width)`` of the image when already read; ``None`` reads it
                from the image file's header.

        A mask of another size is resized to its image (nearest) with one
        :class:`~rrsis.errors.DataWarning` per split.
        """
        sample_id = self.ids[index]
        mask = read_mask(self.mask_path(sample_id), threshold=self.mask_threshold)
        height, width = image_size or image_shape(self.image_path(sample_id))
        if self._size_differs(index, mask.shape, (height, width)):
            return resize_mask(mask, height, width)
        return mask

    def check_mask_size(self, index: int) -> None:
        """Warn as :meth:`mask_at` would if the mask of sample ``index`` is not its image's
        size, from the two files' headers (no pixels decoded)."""
        sample_id = self.ids[index]
        self._size_differs(
            index, image_shape(self.mask_path(sample_id)), image_shape(self.image_path(sample_id))
        )

    def _size_differs(
        self, index: int, mask_size: tuple[int, ...], image_size: tuple[int, int]
    ) -> bool:
        """Whether the sizes differ; the first difference in this split is a DataWarning."""
        if tuple(mask_size[:2]) == tuple(image_size):
            return False
        # The reference loaders resize image and mask to 480 px each and never compare them:
        # the mask is resized to its image (nearest), and we say so once per split.
        if not self._warned_size:
            warnings.warn(
                f"{self.phrase_path}:{self._lines[index]}: mask of id {self.ids[index]!r} is "
                f"{mask_size[0]}x{mask_size[1]} but its image is {image_size[0]}x"
                f"{image_size[1]}; the mask is resized to the image (nearest). Further "
                "mismatches in this split are resized without a warning.",
                DataWarning,
                stacklevel=3,
            )
            self._warned_size = True
        return True

    def meta_of(self, index: int) -> dict[str, Any]:
        """Stored meta of sample ``index`` without loading pixels (``{}`` without a meta file)."""
        return dict(self._metas.get(self.ids[index], {}))

    def plot(self, sample: Sample):
        """Figure with the image, the mask overlay and the expression as title."""
        return plot_sample(sample)
