"""``rrsis demo``: segment the bundled sample images with the shipped model, offline.

Samples live in ``rrsis/data/samples/``. Expressions per image come from
``rrsis/data/samples/expressions.json`` (``{"<file name>": ["expr", ...]}``) when that file exists,
else from :data:`DEFAULT_EXPRESSIONS`. Each (image, expression) pair gives an overlay PNG
(image + red mask + expression as title) and one timing line. Every pair goes through
:meth:`rrsis.infer.predictor.Segmenter.predict`, as ``rrsis predict`` does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from rrsis.data.files import prepare_output
from rrsis.errors import DatasetError
from rrsis.infer.images import to_rgb_uint8
from rrsis.infer.outputs import check_output, save_overlay
from rrsis.infer.predictor import Segmenter

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"
DEFAULT_EXPRESSIONS = ("building", "road", "vegetation along the road", "water")
_IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}


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
        One record per call: ``{"image", "expression", "seconds", "foreground",
        "decided_by", "overlay"}``.
    """
    samples = sample_images(SAMPLES_DIR if samples_dir is None else samples_dir)
    # Every output checked before the model loads (temporaries of killed runs removed).
    prepare_output(out_dir, overwrite=True, directory=True)
    for path, expressions in samples:
        for index in range(len(expressions)):
            check_output(out_dir / f"{path.stem}_{index:02d}.png", overwrite)
    segmenter = Segmenter.from_pretrained(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for path, expressions in samples:
        image = to_rgb_uint8(path)
        for index, expression in enumerate(expressions):
            target = out_dir / f"{path.stem}_{index:02d}.png"
            start = time.perf_counter()
            prediction = segmenter.predict(image, expression)[0]
            seconds = time.perf_counter() - start
            mask = prediction.mask
            save_overlay(target, image, mask, f"{path.name}: {expression}", overwrite)
            record = {
                "image": path.name,
                "expression": expression,
                "seconds": round(seconds, 4),
                "foreground": round(float(mask.mean()), 4),
                "decided_by": prediction.decided_by,
                "overlay": str(target),
            }
            records.append(record)
            echo(
                f"{path.name:<24} {expression!r:<32} {seconds * 1000:8.1f} ms  "
                f"fg {record['foreground'] * 100:5.1f}%  {_decided(prediction.decided_by):<16}"
                f"-> {target.name}"
            )
    return records


def _decided(decided_by: str) -> str:
    return "network alone" if decided_by == "network" else f"rules: {decided_by}"
