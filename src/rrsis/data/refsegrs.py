"""RefSegRS (Yuan et al., TGRS 2024): reader and writer of the exact on-disk format.

Layout::

    ROOT/images/<id>.tif              RGB image (PackBits TIFF in the release)
    ROOT/masks/<id>.tif               single-channel mask, foreground 255
    ROOT/output_phrase_<split>.txt    one "<id> <expression>" per line, split = train|val|test
    ROOT/meta_<split>.jsonl           our optional extension: {"id": ..., <meta>} per line

The id is everything before the first whitespace of a line, the expression everything after
it. Real RefSegRS trees have no ``meta_*.jsonl``; they load unchanged, with object
statistics computed from the mask.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rrsis.data.io import atomic_write, read_image, read_mask, resize_mask, write_image, write_mask
from rrsis.data.stats import object_stats
from rrsis.errors import DatasetError, ExpressionError, OutputExistsError

Sample = dict[str, Any]

SPLITS = ("train", "val", "test")
#: Mask pixels above this are foreground, as in the reference RefSegRS loaders (``> 50``).
MASK_THRESHOLD = 50
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
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
    """Decode ``path`` line by line as UTF-8; returns ``(1-based line number, text)`` pairs."""
    lines = []
    # Universal newlines (\n, \r\n and old-Mac \r), as Python's text mode reads the file.
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
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
            it (nearest) with one warning per split, as the reference loaders accept it.
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
        mask = read_mask(self.mask_path(sample_id), threshold=self.mask_threshold)
        if mask.shape != image.shape[:2]:
            # The reference loaders resize image and mask to 480 px each and never compare
            # them: resize the mask to its image (nearest) and say so once per split.
            height, width = image.shape[:2]
            if not self._warned_size:
                warnings.warn(
                    f"{self.phrase_path}:{self._lines[index]}: mask of id {sample_id!r} is "
                    f"{mask.shape[0]}x{mask.shape[1]} but its image is {height}x{width}; the "
                    "mask is resized to the image (nearest). Further mismatches in this split "
                    "are resized without a warning.",
                    stacklevel=2,
                )
                self._warned_size = True
            mask = resize_mask(mask, height, width)
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

    def meta_of(self, index: int) -> dict[str, Any]:
        """Stored meta of sample ``index`` without loading pixels (``{}`` without a meta file)."""
        return dict(self._metas.get(self.ids[index], {}))

    def plot(self, sample: Sample):
        """Figure with the image, the mask overlay and the expression as title."""
        from rrsis.data.plot import plot_sample

        return plot_sample(sample)


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays inside meta into plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _atomic_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)

    atomic_write(path, write)


class RefSegRSWriter:
    """Write samples as a RefSegRS tree (plus ``meta_<split>.jsonl``).

    Images and masks are written as soon as they are added; the phrase and meta files are
    written when the context exits without an exception (so a failed export never leaves a
    phrase file pointing at missing images).

    Args:
        root: output directory; must be absent or empty unless ``overwrite``.
        overwrite: allow a non-empty ``root``; the format's own files there (phrase/meta files,
            ``images/*.tif``, ``masks/*.tif``) are removed first so no stale sample survives.
        link_duplicates: the RefSegRS layout stores one image file per expression, so an
            image with several expressions is stored several times. When a sample's image is
            pixel-identical to the previous sample's, hard-link its file instead of writing it
            again (readers see ordinary files; on file systems without hard links it is
            written). Builders add all expressions of an image in a row, which cuts disk use
            by their number (about 5x for the Dubai sets).

    Raises:
        OutputExistsError: ``root`` is not empty and ``overwrite`` is false.

    Example:
        >>> with RefSegRSWriter("out") as writer:  # doctest: +SKIP
        ...     writer.add("train", sample)
    """

    def __init__(
        self, root: str | Path, overwrite: bool = False, link_duplicates: bool = True
    ) -> None:
        self.root = Path(root)
        self.link_duplicates = link_duplicates
        self._last_image: tuple[bytes, Path] | None = None  # (digest, file) of the last image
        if self.root.exists() and not self.root.is_dir():
            raise OutputExistsError(f"{self.root}: exists and is not a directory")
        if self.root.is_dir() and any(self.root.iterdir()):
            if not overwrite:
                raise OutputExistsError(
                    f"{self.root}: output directory is not empty (use overwrite to replace it)"
                )
            self._clear()
        self._phrases: dict[str, list[str]] = {}
        self._metas: dict[str, list[str]] = {}
        self._split_of: dict[str, str] = {}
        self._closed = False

    def _clear(self) -> None:
        for pattern in ("output_phrase_*.txt", "meta_*.jsonl", "images/*.tif", "masks/*.tif"):
            for path in self.root.glob(pattern):
                path.unlink()

    def __enter__(self) -> RefSegRSWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def add(self, split: str, sample: Mapping[str, Any]) -> None:
        """Write one sample's image and mask and buffer its expression and meta.

        Args:
            split: split name (letters, digits, ``_`` and ``-``; normally train/val/test).
            sample: dict with ``image`` uint8 ``(H, W, 3)``, ``mask`` bool ``(H, W)``, ``text``,
                ``id`` and optional ``meta``.

        Raises:
            DatasetError: bad split name, id with whitespace or path separators, id used
                before (in any split), image/mask of the wrong shape.
            ExpressionError: empty expression or one containing a line break.
        """
        if self._closed:
            raise RuntimeError("RefSegRSWriter is closed")
        if not _SPLIT_NAME.match(split):
            raise DatasetError(f"invalid split name {split!r}", self.root)
        sample_id = str(sample["id"])
        if not sample_id or re.search(r"\s", sample_id) or "/" in sample_id or "\\" in sample_id:
            raise DatasetError(
                f"invalid id {sample_id!r}: ids must be non-empty, without whitespace or path separators",
                self.root,
            )
        if sample_id in self._split_of:
            raise DatasetError(
                f"duplicate id {sample_id!r} (already in split {self._split_of[sample_id]!r})",
                self.root,
            )
        text = str(sample["text"])
        if "\n" in text or "\r" in text:
            raise ExpressionError(f"expression of id {sample_id!r} contains a line break")
        text = text.strip()
        if not text:
            raise ExpressionError(f"expression of id {sample_id!r} is empty")
        image = np.asarray(sample["image"])
        mask = np.asarray(sample["mask"])
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise DatasetError(
                f"image of id {sample_id!r} must be uint8 (H, W, 3), got {image.dtype} {image.shape}",
                self.root,
            )
        if mask.shape != image.shape[:2]:
            raise DatasetError(
                f"mask of id {sample_id!r} has shape {mask.shape}, image is {image.shape[:2]}",
                self.root,
            )
        meta = dict(sample.get("meta") or {})
        if "area_frac" not in meta or "n_components" not in meta:
            meta.update(object_stats(mask))
        # The sample's own id wins over any "id" inside its meta; serialise before writing
        # pixels so a bad meta value leaves nothing behind.
        record = {"id": sample_id, **{k: v for k, v in _jsonable(meta).items() if k != "id"}}
        try:
            meta_line = json.dumps(record, ensure_ascii=False) + "\n"
        except (TypeError, ValueError) as err:
            raise DatasetError(
                f"meta of id {sample_id!r} is not JSON-serialisable ({err})", self.root
            ) from err
        self._write_image(self.root / "images" / f"{sample_id}.tif", image)
        write_mask(self.root / "masks" / f"{sample_id}.tif", mask)
        self._split_of[sample_id] = split
        self._phrases.setdefault(split, []).append(f"{sample_id} {text}\n")
        self._metas.setdefault(split, []).append(meta_line)

    def _write_image(self, path: Path, image: np.ndarray) -> None:
        digest = None
        if self.link_duplicates:
            digest = hashlib.blake2b(image.tobytes(), digest_size=16)
            digest.update(repr(image.shape).encode())
            digest = digest.digest()
            if self._last_image is not None and self._last_image[0] == digest:
                try:
                    os.link(self._last_image[1], path)
                    return
                except OSError:  # no hard links here (or the first file is gone): write it
                    pass
        write_image(path, image)
        if digest is not None:
            self._last_image = (digest, path)

    def close(self) -> None:
        """Write the buffered phrase and meta files (called on a clean context exit)."""
        if self._closed:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for split, lines in self._phrases.items():
            _atomic_text(phrase_file(self.root, split), "".join(lines))
            _atomic_text(meta_file(self.root, split), "".join(self._metas[split]))
        self._closed = True

    @property
    def counts(self) -> dict[str, int]:
        """Number of samples added per split."""
        return {split: len(lines) for split, lines in self._phrases.items()}


def export_refsegrs(
    dataset_by_split: Mapping[str, Iterable[Mapping[str, Any]]],
    root: str | Path,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, int]:
    """Write several splits of samples as one RefSegRS tree.

    Args:
        dataset_by_split: ``{split: iterable of samples}`` (datasets or lists of dicts).
        root: output directory (see :class:`RefSegRSWriter`).
        overwrite: replace an existing non-empty directory.
        progress: tqdm bar per split; ``None`` shows it only on a terminal.

    Returns:
        Number of samples written per split.
    """
    from tqdm import tqdm

    with RefSegRSWriter(root, overwrite=overwrite) as writer:
        for split, samples in dataset_by_split.items():
            total = len(samples) if hasattr(samples, "__len__") else None
            for sample in tqdm(
                samples,
                total=total,
                desc=f"export {split}",
                disable=None if progress is None else not progress,
            ):
                writer.add(split, sample)
    return writer.counts
