"""Object statistics of a referring mask: one definition for builder, datasets and evaluation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rrsis.data.geometry import EIGHT_CONNECTED

# Size buckets (fraction of image area) and scatter buckets shared with rrsis.eval.breakdown.
SIZE_BUCKETS = ("small", "medium", "large")
COMPONENT_BUCKETS = ("1", "2-5", ">5")


def object_stats(mask: np.ndarray) -> dict[str, float | int]:
    """Foreground fraction and number of 8-connected components of a mask.

    Args:
        mask: ``(H, W)`` array; non-zero is foreground.

    Returns:
        ``{"area_frac": float in [0, 1], "n_components": int}``; an empty mask gives 0 and 0.
    """
    mask = np.asarray(mask) != 0
    if mask.ndim != 2:
        raise ValueError(f"object_stats needs an (H, W) mask, got shape {mask.shape}")
    area_frac = float(mask.mean()) if mask.size else 0.0
    _, n_components = ndimage.label(mask, structure=EIGHT_CONNECTED)
    return {"area_frac": area_frac, "n_components": int(n_components)}


def size_bucket(area_frac: float) -> str:
    """``small`` (< 1 %), ``medium`` (1-10 %) or ``large`` (> 10 %) of the image area."""
    if area_frac < 0.01:
        return "small"
    if area_frac <= 0.10:
        return "medium"
    return "large"


def component_bucket(n_components: int) -> str:
    """``1``, ``2-5`` or ``>5`` connected components (an empty mask falls in ``1``)."""
    if n_components <= 1:
        return "1"
    if n_components <= 5:
        return "2-5"
    return ">5"
