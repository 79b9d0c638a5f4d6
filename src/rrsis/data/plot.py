"""Drawing of dataset samples (the ``plot(sample)`` of every dataset)."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np


def plot_sample(sample: dict[str, Any], alpha: float = 0.45):
    """Draw a sample: the image, the image with the mask overlaid in red, the expression as title.

    Args:
        sample: dataset sample with ``image`` uint8 ``(H, W, 3)``, ``mask`` bool ``(H, W)``,
            ``text`` and ``id``.
        alpha: opacity of the mask overlay.

    Returns:
        A ``matplotlib.figure.Figure`` (not shown; the caller saves or displays it).
    """
    # Imported here so that importing a dataset does not pull in matplotlib, and with the
    # Figure class directly so no GUI backend is ever needed (headless servers, tests).
    from matplotlib.figure import Figure

    image = np.asarray(sample["image"])
    mask = np.asarray(sample["mask"], dtype=bool)
    overlay = image.astype(np.float32) / 255.0
    red = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    overlay[mask] = (1 - alpha) * overlay[mask] + alpha * red

    fig = Figure(figsize=(8, 4.4))
    axes = fig.subplots(1, 2)
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(overlay)
    axes[1].set_title("mask", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    title = f"{sample.get('id', '')}: {sample.get('text', '')}"
    fig.suptitle("\n".join(textwrap.wrap(title, 80)), fontsize=11)
    return fig
