"""Breakdown groups of an evaluation sample: object size, scatter and expression kind.

The paper's point is that referring methods fail on small and scattered objects, so every
evaluation also reports its metrics per group (``docs/protocol.md``):

* ``size``: foreground fraction of the ground-truth mask, ``small`` (< 1 %), ``medium``
  (1-10 %, both ends included), ``large`` (> 10 %); an empty target is ``empty``.
* ``scatter``: 8-connected components of the ground truth, ``single`` (1) or ``scattered``
  (2 or more); an empty target (0) is ``empty``.
* ``components``: a finer scatter view, ``1``, ``2-5`` or ``>5`` components (``empty``).
* ``kind``: the expression pattern, ``category`` / ``attribute`` / ``relation`` /
  ``position``, from ``meta["kind"]`` or, when absent (real RefSegRS), guessed from the text
  with :func:`rrsis.data.builder.infer_kind`; ``unknown`` when there is neither.
* ``category``: the target's class (``meta["category"]``, written by our dataset builders:
  ``road``, ``vegetation``, ...), so a new place's failures show per class. Its groups depend
  on the dataset; a split whose samples carry no category (real RefSegRS) has no such grouping.

Object statistics always come from the ground-truth mask at its own resolution, with the one
definition shared by the dataset builder (:func:`rrsis.data.stats.object_stats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rrsis.data.builder import infer_kind
from rrsis.data.stats import component_bucket, object_stats, size_bucket

EMPTY = "empty"
UNKNOWN = "unknown"
KINDS: tuple[str, ...] = ("category", "attribute", "relation", "position")

# Group names of every grouping, in display order.
GROUPINGS: dict[str, tuple[str, ...]] = {
    "size": ("small", "medium", "large", EMPTY),
    "scatter": ("single", "scattered", EMPTY),
    "components": ("1", "2-5", ">5", EMPTY),
    "kind": (*KINDS, UNKNOWN),
    # Dataset-specific names, shown sorted; left out when no sample has a category.
    "category": (),
}


def size_group(area_frac: float) -> str:
    """``small`` / ``medium`` / ``large`` by foreground fraction; ``empty`` for 0."""
    if area_frac <= 0.0:
        return EMPTY
    return size_bucket(area_frac)


def scatter_group(n_components: int) -> str:
    """``single`` for one connected component, ``scattered`` for more, ``empty`` for none."""
    if n_components <= 0:
        return EMPTY
    return "single" if n_components == 1 else "scattered"


def components_group(n_components: int) -> str:
    """``1`` / ``2-5`` / ``>5`` components; ``empty`` for none."""
    if n_components <= 0:
        return EMPTY
    return component_bucket(n_components)


def kind_group(meta: Mapping[str, Any], text: str | None = None) -> str:
    """The expression kind: ``meta["kind"]``, else inferred from ``text``, else ``unknown``."""
    kind = meta.get("kind")
    if kind:
        return str(kind)
    if text:
        return str(infer_kind(text))
    return UNKNOWN


def category_group(meta: Mapping[str, Any]) -> str:
    """The target's class from ``meta["category"]``, else ``unknown``."""
    category = meta.get("category")
    return str(category) if category else UNKNOWN


def sample_groups(
    meta: Mapping[str, Any], target: np.ndarray | None = None, text: str | None = None
) -> dict[str, str]:
    """Every grouping's group for one sample.

    Args:
        meta: the sample's meta. ``area_frac`` and ``n_components`` are used when both are
            present (the evaluator fills them from the full-resolution ground truth).
        target: ``(H, W)`` ground-truth mask, used when the statistics are missing.
        text: the expression, used when ``meta`` has no ``kind``.

    Returns:
        ``{"size": ..., "scatter": ..., "components": ..., "kind": ..., "category": ...}``.
    """
    if "area_frac" in meta and "n_components" in meta:
        area_frac = float(meta["area_frac"])
        n_components = int(meta["n_components"])
    elif target is not None:
        stats = object_stats(target)
        area_frac = float(stats["area_frac"])
        n_components = int(stats["n_components"])
    else:
        raise ValueError("sample_groups needs area_frac and n_components in meta, or the target")
    return {
        "size": size_group(area_frac),
        "scatter": scatter_group(n_components),
        "components": components_group(n_components),
        "kind": kind_group(meta, text if text is not None else meta.get("text")),
        "category": category_group(meta),
    }
