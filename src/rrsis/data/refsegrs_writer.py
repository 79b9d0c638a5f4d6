"""Writing samples as a RefSegRS tree (the layout is described in :mod:`rrsis.data.refsegrs`).

:class:`RefSegRSWriter` writes one sample at a time (the dataset builders use it);
:func:`export_refsegrs` writes whole splits, e.g. an RRSIS-D split converted to RefSegRS.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rrsis.data.files import atomic_write
from rrsis.data.io import write_image, write_mask
from rrsis.data.refsegrs import meta_file, phrase_file
from rrsis.data.stats import object_stats
from rrsis.errors import DatasetError, ExpressionError, OutputExistsError

# Split names become file names (output_phrase_<split>.txt).
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


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

    atomic_write(path, write, overwrite=True)


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
