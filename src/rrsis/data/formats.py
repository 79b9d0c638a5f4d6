"""Dataset trees as a whole: which format a folder holds, its splits, and their statistics.

Used by ``rrsis data stats | show | export`` and by ``rrsis evaluate`` (format detection,
:func:`require_samples`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rrsis.data.refsegrs import RefSegRS, available_splits
from rrsis.data.rrsisd import RRSISD, rrsisd_splits
from rrsis.data.stats import (
    COMPONENT_BUCKETS,
    SIZE_BUCKETS,
    component_bucket,
    object_stats,
    size_bucket,
)
from rrsis.data.vocabulary import infer_kind
from rrsis.errors import DatasetError

FORMATS = ("refsegrs", "rrsisd")
KINDS = ("category", "attribute", "relation", "position", "unknown")


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


def require_samples(dataset: Any) -> None:
    """Refuse an empty split: a score or a model from no samples means nothing.

    Raises:
        DatasetError: ``dataset`` has no samples; names the phrase file (RefSegRS) or the
            refs file (RRSIS-D) and the split.
    """
    if len(dataset) == 0:
        split = getattr(dataset, "split", None)
        source = _source_file(dataset)
        what = f"split {split!r}" if split is not None else "the dataset"
        raise DatasetError(f"{what} has no samples", source)


def _source_file(dataset: Any) -> Path | None:
    """The file that lists the samples of ``dataset``: phrase file or refs file."""
    if isinstance(dataset, RefSegRS):
        return dataset.phrase_path
    if isinstance(dataset, RRSISD):
        return dataset.refs_path
    return None


def _sample_stats(dataset: Any, index: int) -> tuple[dict[str, Any], str]:
    """Meta (with object stats) and expression of one sample, reading as little as possible."""
    if isinstance(dataset, RefSegRS):
        meta = dataset.meta_of(index)
        if "area_frac" not in meta or "n_components" not in meta:
            # The mask at its image's size (read from the header), as training would see it.
            meta.update(object_stats(dataset.mask_at(index)))
        else:
            # Stored statistics spare decoding the mask, not checking it against its image.
            dataset.check_mask_size(index)
        return meta, dataset.expressions[index]
    sample = dataset[index]
    return sample["meta"], sample["text"]


def compute_stats(datasets: dict[str, Any], progress: bool | None = None) -> dict[str, Any]:
    """Counts, kind, object-size and component histograms per split and in total.

    Args:
        datasets: ``{split: dataset}``.
        progress: tqdm bar; ``None`` shows it only on a terminal.

    Returns:
        ``{"splits": {split: {"n", "kind", "size", "components"}}, "total": {...}, "notes":
        [str]}``; size buckets are small < 1 %, medium 1-10 %, large > 10 % of the image;
        component buckets 1, 2-5, > 5; ``notes`` names each empty split and its file.
        A mask whose size differs from its image is counted at the image's size, with a
        :class:`~rrsis.errors.DataWarning` (one per split).
    """
    from tqdm import tqdm

    guess_kind = infer_kind
    result: dict[str, Any] = {"splits": {}}
    notes: list[str] = []
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
        if not entry["n"]:
            source = _source_file(dataset)
            notes.append(f"split {split!r} has no samples" + (f" ({source})" if source else ""))
        totals["n"] += entry["n"]
        for key in ("kind", "size", "components"):
            totals[key].update(entry[key])
    result["total"] = {
        "n": totals["n"],
        "kind": dict(totals["kind"]),
        "size": {b: totals["size"][b] for b in SIZE_BUCKETS},
        "components": {b: totals["components"][b] for b in COMPONENT_BUCKETS},
    }
    result["notes"] = notes
    return result


def format_table(stats: dict[str, Any]) -> str:
    """Plain-text table of :func:`compute_stats` output, one row per split plus a total, then
    a ``note:`` line per note (an empty split)."""
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
    lines += [f"note: {note}" for note in stats.get("notes", ())]
    return "\n".join(lines)
