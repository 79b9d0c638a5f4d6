"""``rrsis demo``: segment the bundled sample images with the shipped model, offline.

Samples live in ``rrsis/data/samples/``. Expressions per image come from
``rrsis/data/samples/expressions.json`` (``{"<file name>": ["expr", ...]}``) when that file exists,
else from :data:`DEFAULT_EXPRESSIONS`. Each (image, expression) pair gives an overlay PNG
(image + red mask + expression as title) and one timing line.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rrsis.data.io import atomic_write
from rrsis.errors import DatasetError

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"
DEFAULT_EXPRESSIONS = ("building", "road", "vegetation along the road", "water")
_IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}


def overlay_image(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a red mask into an image.

    Args:
        image: ``uint8 (H, W, 3)``.
        mask: ``bool (H, W)``.
        alpha: opacity of the red.

    Returns:
        ``uint8 (H, W, 3)``.
    """
    out = image.astype(np.float32)
    red = np.array([255.0, 0.0, 0.0], dtype=np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * red
    return np.round(out).astype(np.uint8)


def save_overlay(path: Path, image: np.ndarray, mask: np.ndarray, title: str) -> None:
    """Write image + mask overlay with ``title`` above it as a PNG (atomic)."""
    # Figure directly (no pyplot): no GUI backend, works headless.
    from matplotlib.figure import Figure

    height, width = mask.shape
    fig = Figure(figsize=(6, 6 * height / width + 0.6), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1 - 0.6 / (6 * height / width + 0.6)))
    ax.imshow(overlay_image(image, mask))
    ax.set_axis_off()
    fig.suptitle("\n".join(textwrap.wrap(title, 60)), fontsize=10)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def sample_images(samples_dir: Path) -> list[tuple[Path, list[str]]]:
    """The bundled samples and their expressions, sorted by file name."""
    if not samples_dir.is_dir():
        raise DatasetError("bundled sample images are missing; reinstall rrsis", samples_dir)
    listing = samples_dir / "expressions.json"
    table: dict[str, list[str]] = {}
    if listing.is_file():
        try:
            table = json.loads(listing.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DatasetError(f"invalid JSON ({err.msg})", listing, err.lineno) from err
    images = sorted(p for p in samples_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not images:
        raise DatasetError("no sample images found; reinstall rrsis", samples_dir)
    return [(p, list(table.get(p.name, DEFAULT_EXPRESSIONS))) for p in images]


def run_demo(
    out_dir: Path,
    model: str | None = None,
    samples_dir: Path | None = None,
    overwrite: bool = True,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Segment every sample for each of its expressions; write overlays into ``out_dir``.

    Args:
        out_dir: output directory (created).
        model: ``None`` for the shipped weights, or a path / registry name.
        samples_dir: directory of sample images (default: the bundled :data:`SAMPLES_DIR`).
        overwrite: replace overlays from an earlier run.
        echo: where timing lines go.

    Returns:
        One record per call: ``{"image", "expression", "seconds", "foreground", "overlay"}``.
    """
    from rrsis.infer.predictor import Segmenter, to_rgb_uint8
    from rrsis.infer.scene import check_output

    segmenter = Segmenter.from_pretrained(model)
    samples = sample_images(SAMPLES_DIR if samples_dir is None else samples_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for path, expressions in samples:
        image = to_rgb_uint8(path)
        for index, expression in enumerate(expressions):
            target = out_dir / f"{path.stem}_{index:02d}.png"
            check_output(target, overwrite)
            start = time.perf_counter()
            mask = segmenter(image, expression)
            seconds = time.perf_counter() - start
            save_overlay(target, image, mask, f"{path.name}: {expression}")
            record = {
                "image": path.name,
                "expression": expression,
                "seconds": round(seconds, 4),
                "foreground": round(float(mask.mean()), 4),
                "overlay": str(target),
            }
            records.append(record)
            echo(
                f"{path.name:<24} {expression!r:<32} {seconds * 1000:8.1f} ms  "
                f"fg {record['foreground'] * 100:5.1f}%  -> {target.name}"
            )
    return records
