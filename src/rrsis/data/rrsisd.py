"""RRSIS-D (Liu et al., RMSIN, CVPR 2024): reader of the released REFER-style layout.

Accepted layouts (the first that exists wins)::

    ROOT/refs(unc).p, ROOT/instances.json, ROOT/JPEGImages/<file_name>         (flat)
    ROOT/rrsisd/refs(unc).p, ROOT/rrsisd/instances.json,
    ROOT/images/rrsisd/JPEGImages/<file_name>                                  (RMSIN's refer/data)

``refs(unc).p`` is a pickled list of refs ``{ref_id, ann_id, image_id, file_name, category_id,
split, sentences: [{raw, sent, tokens, sent_id}]}``; ``instances.json`` is COCO-like with
``images``, ``annotations`` (segmentation as RLE ``{size, counts}`` or polygons) and optionally
``categories``. Every sentence is one sample, with id ``"<ref_id>_<sent_id>"``.

The pickle is read with a restricted unpickler: only plain containers, strings and numbers
(numpy numbers and arrays included) may be built, so a tampered file cannot run code.

As RMSIN's loader: the text is each sentence's ``raw`` (``sent`` only where ``raw`` is blank),
the image file is named by ``instances.json``, and a mask whose size differs from its image is
resized to it (nearest; one :class:`~rrsis.errors.DataWarning` per split) rather than refused.
Where this reader differs from RMSIN's: an RLE whose counts do not sum to its ``size`` is
refused (pycocotools decodes it into a wrong mask without a word); a byte-order mark at the
start of ``instances.json`` is dropped; and RMSIN keeps the pixels covered by exactly one
polygon of a multi-polygon annotation, this reader the union (RRSIS-D stores RLE, where the two
agree).
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rrsis.data.coco_rle import decode_segmentation
from rrsis.data.io import read_image, resize_mask
from rrsis.data.plot import plot_sample
from rrsis.data.stats import object_stats
from rrsis.errors import DatasetError, DataWarning

Sample = dict[str, Any]

_ALLOWED_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool"}
_ALLOWED_NUMPY = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("scalar", "_reconstruct")
} | {("numpy", "dtype"), ("numpy", "ndarray")}
_REQUIRED_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


class _RefusedClass(pickle.UnpicklingError):
    """The pickle asked for a type outside the allow-list."""


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that builds only builtin containers, strings and numbers (numpy's included)."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 pickles name the module __builtin__; fix_imports maps it to builtins.
        if module == "builtins" and name in _ALLOWED_BUILTINS:
            return super().find_class(module, name)
        # Refs written from numpy data may hold numpy numbers or arrays (an id, a box): their
        # reconstruction reads a dtype and raw bytes and runs no other code.
        if (module, name) in _ALLOWED_NUMPY:
            return super().find_class(module, name)
        raise _RefusedClass(f"refuses to unpickle {module}.{name}")


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """Load a ``refs(*).p`` file with the restricted unpickler.

    Args:
        path: pickle file holding a list of ref dicts.

    Returns:
        The list of refs.

    Raises:
        DatasetError: missing file, forbidden object type, corrupt pickle or wrong structure.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("refs file not found", path)
    try:
        refs = _SafeUnpickler(io.BytesIO(path.read_bytes())).load()
    except _RefusedClass as err:
        raise DatasetError(str(err), path) from err
    except Exception as err:  # truncated pickles raise EOFError, ValueError, ...
        raise DatasetError(f"cannot read pickle ({type(err).__name__}: {err})", path) from err
    if not isinstance(refs, list):
        raise DatasetError(f"expected a list of refs, got {type(refs).__name__}", path)
    for index, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise DatasetError(f"ref #{index} is a {type(ref).__name__}, not a dict", path)
        missing = [key for key in _REQUIRED_REF_KEYS if key not in ref]
        if missing:
            raise DatasetError(f"ref #{index} lacks {', '.join(missing)}", path)
    return refs


def _resolve_layout(root: Path, refs_file: str) -> tuple[Path, Path, Path]:
    """Find the refs file, instances.json and image directory under ``root``."""
    for base in (root, root / "rrsisd"):
        if (base / refs_file).is_file():
            break
    else:
        raise DatasetError(f"{refs_file} not found (looked in . and rrsisd/)", root)
    instances = base / "instances.json"
    if not instances.is_file():
        raise DatasetError("instances.json not found next to the refs file", instances)
    for images in (
        base / "JPEGImages",
        root / "images" / "rrsisd" / "JPEGImages",
        base / "images" / "rrsisd" / "JPEGImages",
        root / "JPEGImages",
    ):
        if images.is_dir():
            return base / refs_file, instances, images
    raise DatasetError("image directory JPEGImages/ not found", base / "JPEGImages")


class RRSISD:
    """Map-style dataset over one split of RRSIS-D, one sample per sentence.

    Args:
        root: dataset directory (see the module docstring for the accepted layouts).
        split: ``train``, ``val`` or ``test``.
        refs_file: name of the refs pickle.
        transforms: optional callable applied to each sample dict.

    Attributes:
        ids: sample ids ``"<ref_id>_<sent_id>"``.
        expressions: sentences aligned with ``ids``.

    Each item is ``{"image": uint8 (H, W, 3), "mask": bool (H, W), "text": str, "id": str,
    "meta": {"category", "ref_id", "ann_id", "image_id", "source", "area_frac",
    "n_components"}}``.

    Raises:
        DatasetError: missing files, forbidden pickle content, unknown split, refs pointing
            at absent annotations/images, empty sentences; when a sample is read, a
            segmentation that cannot be decoded (an RLE whose counts miss its size included).
            A split whose refs hold no sentences opens (``len`` 0); what scores or trains on
            it refuses it (:func:`rrsis.data.formats.require_samples`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        refs_file: str = "refs(unc).p",
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        if not self.root.is_dir():
            raise DatasetError("RRSIS-D root directory not found", self.root)
        self.refs_path, self.instances_path, self.image_dir = _resolve_layout(self.root, refs_file)
        refs = load_refs(self.refs_path)
        try:
            # utf-8-sig: a leading byte-order mark is dropped rather than refused.
            instances = json.loads(self.instances_path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            line = getattr(err, "lineno", None)
            raise DatasetError(f"invalid JSON ({err})", self.instances_path, line) from err
        if (
            not isinstance(instances, dict)
            or "images" not in instances
            or "annotations" not in instances
        ):
            raise DatasetError(
                'expected a JSON object with "images" and "annotations"', self.instances_path
            )
        self._images = {img["id"]: img for img in instances["images"]}
        self._annotations = {ann["id"]: ann for ann in instances["annotations"]}
        self._categories = {cat["id"]: cat["name"] for cat in instances.get("categories", [])}

        splits = sorted({str(ref["split"]) for ref in refs})
        if split not in splits:
            raise DatasetError(
                f"no refs in split {split!r} (splits present: {', '.join(splits)})", self.refs_path
            )
        self._warned_size = False
        self.ids: list[str] = []
        self.expressions: list[str] = []
        self._refs: list[dict[str, Any]] = []
        for index, ref in enumerate(refs):
            if ref["split"] != split:
                continue
            self._check_ref(index, ref)
            for sentence in ref["sentences"]:
                # RMSIN / LAVT tokenise `raw`; `sent` is REFER's cleaned copy (lowercased,
                # punctuation removed), used only where `raw` is missing or blank.
                text = str(sentence.get("raw") or "").strip()
                text = text or str(sentence.get("sent") or "").strip()
                if not text:
                    raise DatasetError(
                        f"ref #{index} (ref_id {ref['ref_id']}) has an empty sentence "
                        f"(sent_id {sentence.get('sent_id')})",
                        self.refs_path,
                    )
                self.ids.append(f"{ref['ref_id']}_{sentence.get('sent_id')}")
                self.expressions.append(text)
                self._refs.append(ref)

    def _check_ref(self, index: int, ref: dict[str, Any]) -> None:
        """Cheap consistency checks of one ref against instances.json and the image folder."""
        where = f"ref #{index} (ref_id {ref['ref_id']})"
        if ref["ann_id"] not in self._annotations:
            raise DatasetError(
                f"{where}: annotation {ref['ann_id']} not in instances.json", self.refs_path
            )
        if ref["image_id"] not in self._images:
            raise DatasetError(
                f"{where}: image {ref['image_id']} not in instances.json", self.refs_path
            )
        image_path = self.image_path(ref)
        if not image_path.is_file():
            raise DatasetError(f"{where}: image file not found: {image_path}", self.refs_path)
        sentences = ref["sentences"]
        if not isinstance(sentences, (list, tuple)) or not all(
            isinstance(s, dict) and "sent_id" in s for s in sentences
        ):
            raise DatasetError(
                f"{where}: sentences must be a list of dicts with sent_id", self.refs_path
            )

    def image_path(self, ref: dict[str, Any]) -> Path:
        """Image file of a ref: its instances.json entry's ``file_name`` (as RMSIN's REFER
        reads it), else the ref's own (which in REFER-style refs may carry an ``_<ann_id>``
        suffix)."""
        file_name = self._images[ref["image_id"]].get("file_name") or ref.get("file_name")
        return self.image_dir / str(file_name)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        """Load sample ``index`` (see the class docstring for the dict layout)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        ref = self._refs[index]
        image_path = self.image_path(ref)
        image = read_image(image_path)
        height, width = image.shape[:2]
        annotation = self._annotations[ref["ann_id"]]
        try:
            # Polygons are rasterised at the size instances.json records, so a replaced or
            # resized image file shows up as a size mismatch instead of a silently wrong mask.
            info = self._images[ref["image_id"]]
            mask = decode_segmentation(
                annotation["segmentation"],
                int(info.get("height", height)),
                int(info.get("width", width)),
            )
        except (KeyError, ValueError, TypeError) as err:
            raise DatasetError(
                f"annotation {ref['ann_id']} (ref_id {ref['ref_id']}): cannot decode "
                f"segmentation ({err})",
                self.instances_path,
            ) from err
        if mask.shape != (height, width):
            # RMSIN never compares the two (it resizes each to 480 on its own), so such a pair
            # is still a sample there: resize the mask to the image (nearest) and say so once.
            if not self._warned_size:
                warnings.warn(
                    f"{self.instances_path}: annotation {ref['ann_id']}: mask is "
                    f"{mask.shape[0]}x{mask.shape[1]} but image {image_path.name} is "
                    f"{height}x{width}; the mask is resized to the image (nearest). Further "
                    "mismatches in this split are resized without a warning.",
                    DataWarning,
                    stacklevel=2,
                )
                self._warned_size = True
            mask = resize_mask(mask, height, width)
        category_id = ref.get("category_id", annotation.get("category_id"))
        meta: dict[str, Any] = {
            "category": self._categories.get(category_id, str(category_id)),
            "ref_id": ref["ref_id"],
            "ann_id": ref["ann_id"],
            "image_id": ref["image_id"],
            "source": Path(image_path.name).stem,
            **object_stats(mask),
        }
        sample: Sample = {
            "image": image,
            "mask": mask,
            "text": self.expressions[index],
            "id": self.ids[index],
            "meta": meta,
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(self, sample: Sample):
        """Figure with the image, the mask overlay and the expression as title."""
        return plot_sample(sample)


def rrsisd_splits(root: str | Path, refs_file: str = "refs(unc).p") -> list[str]:
    """Split names present in an RRSIS-D tree (train, val, test first)."""
    refs_path, _, _ = _resolve_layout(Path(root), refs_file)
    found = {str(ref["split"]) for ref in load_refs(refs_path)}
    order = ("train", "val", "test")
    return sorted(found, key=lambda s: (order.index(s) if s in order else len(order), s))
