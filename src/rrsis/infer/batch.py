"""Segment many images in one run (``rrsis predict-batch``).

:func:`predict_images` reads a list of files or folders with one model load and one progress
bar, writes each image's files as ``rrsis predict`` does (:func:`rrsis.infer.outputs.write_prediction`),
and lists every (image, expression) pair in a ``summary.csv``: status, foreground share and what
decided the mask (``network`` or a composition rule). An image that cannot be read is recorded
and skipped instead of ending the run. Options live in one :class:`BatchConfig`.

Output names, in the output folder: ``<image stem>.<ext>`` for one expression,
``<image stem>_<expression slug>.<ext>`` for several (the slug is the expression in lower case,
runs of other characters turned into ``-``). Overlays add ``_overlay.png``, polygons ``.geojson``
(not written when a mask has none). ``<ext>`` is ``tif`` for TIFF inputs (georeferencing kept)
and ``png`` otherwise, unless chosen. A merged polygon layer and a VRT mosaic of the masks are
optional (:mod:`rrsis.infer.mosaic`).
"""

from __future__ import annotations

import csv
import io
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rrsis.data.files import atomic_write, outputs_of_run, prepare_output
from rrsis.errors import DatasetError, ExpressionError, OutputExistsError, RRSISError
from rrsis.infer.images import to_rgb_uint8
from rrsis.infer.inputs import IMAGE_SUFFIXES, find_images, slug  # noqa: F401 - re-exported
from rrsis.infer.layers import MIN_AREA
from rrsis.infer.mosaic import check_mosaic_paths, write_mosaics
from rrsis.infer.outputs import (
    TIFF_SUFFIXES,
    check_mask_format,
    georeference,
    write_prediction,
)
from rrsis.infer.vector import parse_crs

if TYPE_CHECKING:  # the Segmenter (and torch) come from the caller
    from rrsis.infer.predictor import Segmenter

SUMMARY_NAME = "summary.csv"
SUMMARY_FIELDS = (
    "image",
    "expression",
    "mask",
    "status",
    "foreground_pct",
    "decided_by",
    "width",
    "height",
    "seconds",
    "error",
)


@dataclass
class BatchConfig:
    """What a batch run writes and how it reads its images.

    Args:
        mask_format: ``auto`` (``tif`` for TIFF inputs, else ``png``; always ``tif`` with
            ``probabilities``), ``tif`` or ``png``.
        overlay: also write ``<name>_overlay.png``.
        vector: also write ``<name>.geojson`` (CRS coordinates for GeoTIFFs, else pixels) for
            each mask with polygons.
        recursive: search folders recursively.
        overwrite: replace existing outputs.
        skip_existing: skip images whose outputs all exist (resume an interrupted run).
        probabilities: float32 probabilities in TIFFs instead of 0/255 masks.
        bands: 1-based bands read as red, green, blue (see :func:`~rrsis.data.io.read_image`).
        progress: show a progress bar.
        min_area: drop polygons under this area, in m² (geodesic; pixels for images without a
            CRS); default :data:`~rrsis.infer.layers.MIN_AREA`, 0 keeps all.
        vector_crs: write the polygons in this CRS (e.g. ``"EPSG:4326"``); an image without
            a CRS then gets an ``error`` row.
        merged_vector: also write every mask's polygons into this one file (fields
            ``expression``, ``source``; :func:`~rrsis.infer.mosaic.write_merged_layer`); a
            bare file name goes into the output folder.
        vrt: also write this ``.vrt`` mosaic of the GeoTIFF masks, one band per expression
            (a bare file name: in the output folder).

    Raises:
        RRSISError: a value out of range or an unknown CRS (one line naming it).
    """

    mask_format: str = "auto"
    overlay: bool = False
    vector: bool = False
    recursive: bool = False
    overwrite: bool = False
    skip_existing: bool = False
    probabilities: bool = False
    bands: Sequence[int] | None = None
    progress: bool = True
    min_area: float | None = MIN_AREA
    vector_crs: Any = None
    merged_vector: str | Path | None = None
    vrt: str | Path | None = None

    def __post_init__(self) -> None:
        if self.mask_format not in ("auto", "tif", "png"):
            raise RRSISError(f"mask format must be auto, tif or png, got {self.mask_format!r}")
        if self.overwrite and self.skip_existing:
            raise RRSISError("choose one of overwrite and skip_existing")
        if self.min_area is not None and not self.min_area >= 0:
            raise RRSISError(f"min_area must be >= 0, got {self.min_area}")
        if self.vector_crs is not None:
            self.vector_crs = parse_crs(self.vector_crs)  # a typo fails before the first image
        self.merged_vector = None if self.merged_vector is None else Path(self.merged_vector)
        self.vrt = None if self.vrt is None else Path(self.vrt)
        check_mosaic_paths(self.merged_vector, self.vrt)


@dataclass
class PlannedImage:
    """One input image and the files it will produce (one entry per expression)."""

    image: Path
    masks: list[Path]
    overlays: list[Path | None] = field(default_factory=list)
    vectors: list[Path | None] = field(default_factory=list)

    def outputs(self) -> list[Path]:
        return [p for p in (*self.masks, *self.overlays, *self.vectors) if p is not None]

    def written(self) -> list[Path]:
        """The files a finished image always has (a mask without polygons has no vector file)."""
        return [p for p in (*self.masks, *self.overlays) if p is not None]


def plan_outputs(
    images: Sequence[Path],
    expressions: Sequence[str],
    out_dir: Path,
    config: BatchConfig | None = None,
) -> list[PlannedImage]:
    """Output paths of every image, checking that no two images (or inputs) share a name.

    ``config`` gives the mask format and which extra files (overlay, polygons) each gets.

    Raises:
        OutputExistsError: two inputs with the same stem, or an output that is also an input.
    """
    config = config or BatchConfig()
    mask_format, probabilities = config.mask_format, config.probabilities
    overlay, vector = config.overlay, config.vector
    names: list[str] = []
    for expression in expressions:  # two expressions with one slug: number the later ones
        base = name = slug(expression)
        number = 2
        while name in names:
            name, number = f"{base}-{number}", number + 1
        names.append(name)
    stems: dict[str, Path] = {}
    plans = []
    for image in images:
        if image.stem in stems:
            raise OutputExistsError(
                f"{image} and {stems[image.stem]} would write the same outputs "
                f"({image.stem}.*); segment them into different folders"
            )
        stems[image.stem] = image
        tiff_input = image.suffix.lower() in TIFF_SUFFIXES
        if mask_format == "auto":
            suffix = "tif" if probabilities or tiff_input else "png"
        else:
            suffix = mask_format
        bases = [image.stem] if len(expressions) == 1 else [f"{image.stem}_{n}" for n in names]
        plans.append(
            PlannedImage(
                image,
                [out_dir / f"{b}.{suffix}" for b in bases],
                [out_dir / f"{b}_overlay.png" if overlay else None for b in bases],
                [out_dir / f"{b}.geojson" if vector else None for b in bases],
            )
        )
    inputs = {p.resolve() for p in images}
    for plan in plans:
        for path in plan.outputs():
            if path.resolve() in inputs:
                raise OutputExistsError(f"{path}: output path is also an input")
    return plans


def write_summary(path: Path, rows: list[dict], overwrite: bool) -> None:
    """Write summary rows (dicts with :data:`SUMMARY_FIELDS`) as a CSV file, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)


@dataclass
class BatchPlan:
    """What a batch run will do: every image's outputs, checked (see :func:`prepare_batch`)."""

    expressions: list[str]
    out_dir: Path
    images: list[PlannedImage]
    config: BatchConfig = field(default_factory=BatchConfig)


def prepare_batch(
    inputs: Sequence[str | Path],
    expressions: str | Sequence[str],
    out_dir: str | Path,
    config: BatchConfig | None = None,
) -> BatchPlan:
    """Every check of a batch run made before any image is read, without a model.

    Args:
        inputs: image files and/or folders (searched for ``.tif .tiff .png .jpg .jpeg``).
        expressions: one expression or a list.
        out_dir: output folder (created by :func:`run_batch`).
        config: the run's options (:class:`BatchConfig`); ``None``: the defaults.

    The output folder is checked first (a directory, or creatable, and writable), and the
    temporaries killed runs left in it are removed.

    Raises:
        RRSISError: the output folder cannot be written (one line naming it).
        OutputExistsError: an output exists (without ``overwrite``/``skip_existing``), two
            inputs share a stem, or an output is an input.
        DatasetError: nothing to segment, or a missing input path.
        ExpressionError: no or an empty expression.
    """
    config = config or BatchConfig()
    out_dir = prepare_output(out_dir, overwrite=True, directory=True)  # files: checked below
    expressions = [expressions] if isinstance(expressions, str) else list(expressions)
    if not expressions:
        raise ExpressionError("no referring expression given")
    for expression in expressions:
        if not isinstance(expression, str) or not expression.strip():
            raise ExpressionError(f"empty referring expression: {expression!r}")
    mosaics = {k: getattr(config, k) for k in ("merged_vector", "vrt")}
    config = replace(
        config, **{k: out_dir / p for k, p in mosaics.items() if p and p.name == str(p)}
    )
    plans = plan_outputs(find_images(inputs, config.recursive), expressions, out_dir, config)
    for plan in plans:
        check_mask_format(plan.masks[0], config.probabilities)
    if not (config.overwrite or config.skip_existing):
        mosaics = [p for p in (config.merged_vector, config.vrt) if p is not None]
        for path in [p for plan in plans for p in plan.outputs()] + [out_dir / SUMMARY_NAME]:
            if path.exists():
                raise OutputExistsError(
                    f"{path}: output exists (use --overwrite to replace it, or --skip-existing "
                    "to keep it and segment the rest)"
                )
        for path in mosaics:
            prepare_output(path)
    return BatchPlan(expressions, out_dir, plans, config)


def run_batch(batch: BatchPlan, segmenter: Segmenter) -> list[dict]:
    """Segment a prepared batch, writing its outputs and ``summary.csv``.

    The model reads each image once (all expressions in one batched call). An image that cannot
    be read (or is smaller than 32 px) is recorded with status ``error`` and its message, and
    the run goes on. ``out_dir/summary.csv`` lists every (image, expression) pair: mask path,
    status (``ok``/``skipped``/``error``), foreground percentage, what decided the mask, size
    and seconds per image; it is written even when the run is interrupted.

    Args:
        batch: from :func:`prepare_batch`.
        segmenter: the :class:`~rrsis.infer.predictor.Segmenter` that reads every image.

    Returns:
        The summary rows (dicts with :data:`SUMMARY_FIELDS`).
    """
    from tqdm.auto import tqdm

    expressions = segmenter.check_expressions(batch.expressions)
    batch.out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    progress = batch.config.progress
    try:
        for plan in tqdm(batch.images, desc="images", unit="image", disable=not progress):
            rows.extend(predict_one(plan, batch.config, expressions, segmenter))
        write_mosaics(batch.config, batch.images, batch.expressions, rows, segmenter.threshold)
    finally:  # an interrupted run still lists what it wrote
        # --skip-existing resumes a run: its summary is replaced by the whole new one.
        replace = batch.config.overwrite or batch.config.skip_existing
        write_summary(batch.out_dir / SUMMARY_NAME, rows, replace)
    return rows


def predict_images(
    inputs: Sequence[str | Path],
    expressions: str | Sequence[str],
    out_dir: str | Path,
    segmenter: Segmenter,
    config: BatchConfig | None = None,
) -> list[dict]:
    """Segment every image of ``inputs`` for each expression, writing masks into ``out_dir``.

    :func:`prepare_batch` (every output checked before the first image is read, so a run never
    replaces files unless ``config.overwrite``) followed by :func:`run_batch`.

    Returns:
        The summary rows (dicts with :data:`SUMMARY_FIELDS`).
    """
    return run_batch(prepare_batch(inputs, expressions, out_dir, config), segmenter)


def _error_rows(base: dict, expressions: list[str], image: Path, message: str) -> list[dict]:
    where = "" if str(image) in message else f"{image}: "
    warnings.warn(f"skipped {where}{message}", UserWarning, stacklevel=4)
    return [
        base
        | {"expression": e, "mask": "", "status": "error", "foreground_pct": "", "error": message}
        for e in expressions
    ]


def predict_one(
    plan: PlannedImage, config: BatchConfig, expressions: list[str], segmenter: Segmenter
) -> list[dict]:
    """Summary rows of one planned image, after writing its outputs."""
    base = {"image": str(plan.image), "width": "", "height": "", "seconds": "", "error": ""}
    base |= {"decided_by": ""}
    existing = [p.exists() for p in plan.outputs()]
    if config.skip_existing and all(p.exists() for p in plan.written()):
        return [
            base | {"expression": e, "mask": str(m), "status": "skipped", "foreground_pct": ""}
            for e, m in zip(expressions, plan.masks)
        ]
    start = time.perf_counter()
    try:
        image = to_rgb_uint8(plan.image, config.bands)
    except (DatasetError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        return _error_rows(base, expressions, plan.image, message)
    georef = georeference(plan.image, image.shape[:2])
    if config.vector_crs is not None and plan.vectors[0] is not None and not (georef or [None])[0]:
        message = "no CRS to reproject its polygons from (--vector-crs)"
        return _error_rows(base, expressions, plan.image, message)
    predictions = segmenter.predict(image, expressions)
    # Outputs that exist now were left by an interrupted run (--skip-existing): replaced. Any
    # other that appears while writing (another run) is refused.
    overwrite = config.overwrite or any(existing)
    with outputs_of_run():  # all of this image's files, or none
        for k, prediction in enumerate(predictions):
            write_prediction(
                prediction.mask,
                plan.masks[k],
                expression=expressions[k],
                image=image,
                overlay=plan.overlays[k],
                vector=plan.vectors[k],
                georef=georef,
                probabilities=prediction.probability if config.probabilities else None,
                min_area=config.min_area,
                vector_crs=config.vector_crs,
                overwrite=overwrite,
                vector_if_empty=False,
            )
    seconds = f"{time.perf_counter() - start:.3f}"
    height, width = image.shape[:2]
    return [
        base
        | {
            "expression": expression,
            "mask": str(mask_path),
            "status": "ok",
            "foreground_pct": f"{prediction.mask.mean() * 100:.3f}",
            "decided_by": prediction.decided_by,
            "width": width,
            "height": height,
            "seconds": seconds,
        }
        for expression, prediction, mask_path in zip(expressions, predictions, plan.masks)
    ]
