"""Write one image's prediction (mask, overlay, polygons), and segment many images in one run.

:func:`write_prediction` is what ``rrsis predict`` writes for one image; :func:`predict_images`
(``rrsis predict-batch``) runs it over a list of files or folders with one model load, one
progress bar, a ``summary.csv`` of every (image, expression) pair, and per-image errors that are
recorded and skipped instead of ending the run.

Output names, in the output folder: ``<image stem>.<ext>`` for one expression,
``<image stem>_<expression slug>.<ext>`` for several (the slug is the expression in lower case,
runs of other characters turned into ``-``). Overlays add ``_overlay.png``, polygons ``.geojson``.
``<ext>`` is ``tif`` for TIFF inputs (georeferencing kept) and ``png`` otherwise, unless chosen.
"""

from __future__ import annotations

import csv
import io
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrsis.errors import DatasetError, ExpressionError, OutputExistsError, RRSISError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_TIFF = (".tif", ".tiff")
SUMMARY_NAME = "summary.csv"
SUMMARY_FIELDS = (
    "image",
    "expression",
    "mask",
    "status",
    "foreground_pct",
    "width",
    "height",
    "seconds",
    "error",
)


# ---------------------------------------------------------------------- one image
def georeference(path: Path, shape: tuple[int, int]):
    """``(crs, transform)`` of a georeferenced GeoTIFF of that shape, else ``None``."""
    if path.suffix.lower() not in _TIFF:
        return None
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                crs, transform, size = ds.crs, ds.transform, (ds.height, ds.width)
    except RasterioIOError:
        return None
    if size != tuple(shape) or (crs is None and transform.is_identity):
        return None
    return crs, transform


def _write_geotiff(path: Path, band: np.ndarray, crs, transform) -> None:
    """One band on the input's grid (CRS and geotransform) as a GeoTIFF, atomically."""
    import rasterio

    from rrsis.data.io import atomic_write

    profile = {"driver": "GTiff", "height": band.shape[0], "width": band.shape[1], "count": 1}
    profile |= {"dtype": band.dtype.name, "crs": crs, "transform": transform}
    profile |= {"compress": "deflate"}

    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(band[None])

    atomic_write(path, write)


def check_mask_format(output: Path, probabilities: bool = False) -> str | None:
    """PIL format name for a mask path (``None`` for TIFF); raises for unknown suffixes.

    ``probabilities`` (float32 output) needs a TIFF.
    """
    from PIL import Image

    if output.suffix.lower() in _TIFF:
        return None
    if probabilities:
        raise RRSISError(f"{output}: probabilities are written as float32 TIFF; use a .tif path")
    Image.init()
    try:
        return Image.EXTENSION[output.suffix.lower()]
    except KeyError as err:
        raise RRSISError(f"{output}: unknown image format {output.suffix!r}") from err


def write_prediction(
    mask: np.ndarray,
    output: Path,
    *,
    expression: str,
    image: np.ndarray | None = None,
    overlay: Path | None = None,
    vector: Path | None = None,
    georef=None,
    min_area: float | None = None,
    probabilities: np.ndarray | None = None,
    vector_crs=None,
) -> None:
    """Write a mask (0/255), and optionally its overlay PNG and GeoJSON polygons, atomically.

    Existing files are replaced: callers check their outputs first.

    Args:
        mask: ``bool (H, W)``.
        output: ``.tif``/``.tiff`` (a GeoTIFF when ``georef`` is given) or any image format PIL
            writes (``.png``, ...).
        expression: the overlay's title and the polygons' ``expression`` property.
        image: ``uint8 (H, W, 3)``, needed for ``overlay``.
        overlay: overlay PNG path.
        vector: GeoJSON path; coordinates in ``georef``'s CRS, else in pixels.
        georef: ``(crs, transform)`` from :func:`georeference`, or ``None``.
        min_area: drop smaller polygons from ``vector`` (CRS units squared, else pixels).
        probabilities: ``float32 (H, W)``: write these to ``output`` (a TIFF) instead of the
            0/255 mask; the overlay and polygons still show ``mask``.
        vector_crs: write the polygons in this CRS (e.g. ``"EPSG:4326"``); needs ``georef``.
    """
    from PIL import Image

    from rrsis.data.io import atomic_write, write_mask

    fmt = check_mask_format(output, probabilities is not None)
    if fmt is None:
        band = (
            mask.astype(np.uint8) * np.uint8(255)
            if probabilities is None
            else np.asarray(probabilities, np.float32)
        )
        if georef is not None:
            _write_geotiff(output, band, *georef)
        elif probabilities is None:
            write_mask(output, mask)
        else:
            import tifffile

            from rrsis.data.io import tiff_compression

            compression = tiff_compression()
            atomic_write(output, lambda tmp: tifffile.imwrite(tmp, band, compression=compression))
    else:
        mask_image = Image.fromarray(mask.astype("uint8") * 255)
        atomic_write(output, lambda tmp: mask_image.save(tmp, format=fmt))
    if overlay is not None:
        if image is None:
            raise ValueError("an overlay needs the image")
        from rrsis.infer.demo import save_overlay

        save_overlay(overlay, image, mask, expression)
    if vector is not None:
        from affine import Affine

        from rrsis.infer.vector import BandVectorizer

        crs, transform = georef or (None, Affine.identity())
        writer = BandVectorizer(
            vector,
            crs,
            transform,
            mask.shape[0],
            [expression],
            overwrite=True,
            min_area=min_area,
            dst_crs=vector_crs,
        )
        try:
            writer.add_rows(mask[None], 0)
        except BaseException:
            writer.abort()
            raise
        writer.close()


# ---------------------------------------------------------------------- many images
def slug(expression: str, limit: int = 48) -> str:
    """File-name part for an expression: lower case, other characters as ``-``."""
    text = re.sub(r"[^0-9a-z]+", "-", expression.lower()).strip("-")
    return text[:limit].rstrip("-") or "expression"


def find_images(inputs: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Image files named by ``inputs`` (files, or folders searched for image suffixes).

    Raises:
        DatasetError: a path that does not exist, or nothing to segment at all.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(
                sorted(
                    p
                    for p in path.glob(pattern)
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        elif path.exists():
            found.append(path)
        else:
            raise DatasetError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DatasetError(
            "no images to segment (folders are searched for " + ", ".join(IMAGE_SUFFIXES) + ")"
        )
    return unique


@dataclass
class PlannedImage:
    """One input image and the files it will produce (one entry per expression)."""

    image: Path
    masks: list[Path]
    overlays: list[Path | None] = field(default_factory=list)
    vectors: list[Path | None] = field(default_factory=list)

    def outputs(self) -> list[Path]:
        return [p for p in (*self.masks, *self.overlays, *self.vectors) if p is not None]


def plan_outputs(
    images: Sequence[Path],
    expressions: Sequence[str],
    out_dir: Path,
    *,
    mask_format: str = "auto",
    overlay: bool = False,
    vector: bool = False,
    probabilities: bool = False,
) -> list[PlannedImage]:
    """Output paths of every image, checking that no two images (or inputs) share a name.

    Args:
        mask_format: ``auto`` (``tif`` for TIFF inputs, else ``png``; always ``tif`` with
            ``probabilities``), ``tif`` or ``png``.
        probabilities: float32 probabilities instead of masks (TIFF only).

    Raises:
        OutputExistsError: two inputs with the same stem, or an output that is also an input.
    """
    if mask_format not in ("auto", "tif", "png"):
        raise RRSISError(f"mask format must be auto, tif or png, got {mask_format!r}")
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
        tiff_input = image.suffix.lower() in _TIFF
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


def _write_summary(path: Path, rows: list[dict]) -> None:
    from rrsis.data.io import atomic_write

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@dataclass
class BatchPlan:
    """What a batch run will do: every image's outputs, checked (see :func:`prepare_batch`)."""

    expressions: list[str]
    out_dir: Path
    images: list[PlannedImage]
    skip_existing: bool = False
    probabilities: bool = False


def prepare_batch(
    inputs: Sequence[str | Path],
    expressions: str | Sequence[str],
    out_dir: str | Path,
    *,
    mask_format: str = "auto",
    overlay: bool = False,
    vector: bool = False,
    recursive: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    probabilities: bool = False,
) -> BatchPlan:
    """Every check of a batch run made before any image is read, without a model.

    Args:
        inputs: image files and/or folders (searched for ``.tif .tiff .png .jpg .jpeg``).
        expressions: one expression or a list.
        out_dir: output folder (created by :func:`run_batch`).
        mask_format: ``auto`` (``tif`` for TIFF inputs, else ``png``), ``tif`` or ``png``.
        overlay: also write ``<name>_overlay.png``.
        vector: also write ``<name>.geojson`` (CRS coordinates for GeoTIFFs, else pixels).
        recursive: search folders recursively.
        overwrite: replace existing outputs.
        skip_existing: skip images whose outputs all exist (resume an interrupted run).
        probabilities: float32 probabilities in TIFFs instead of 0/255 masks.

    Raises:
        OutputExistsError: an output exists (without ``overwrite``/``skip_existing``), two
            inputs share a stem, or an output is an input.
        DatasetError: nothing to segment, or a missing input path.
        ExpressionError: no or an empty expression.
    """
    if overwrite and skip_existing:
        raise RRSISError("choose one of overwrite and skip_existing")
    expressions = [expressions] if isinstance(expressions, str) else list(expressions)
    if not expressions:
        raise ExpressionError("no referring expression given")
    for expression in expressions:
        if not isinstance(expression, str) or not expression.strip():
            raise ExpressionError(f"empty referring expression: {expression!r}")
    out_dir = Path(out_dir)
    images = find_images(inputs, recursive)
    plans = plan_outputs(
        images,
        expressions,
        out_dir,
        mask_format=mask_format,
        overlay=overlay,
        vector=vector,
        probabilities=probabilities,
    )
    for plan in plans:
        check_mask_format(plan.masks[0], probabilities)
    if not (overwrite or skip_existing):
        for path in [p for plan in plans for p in plan.outputs()] + [out_dir / SUMMARY_NAME]:
            if path.exists():
                raise OutputExistsError(
                    f"{path}: output exists (use --overwrite to replace it, or --skip-existing "
                    "to keep it and segment the rest)"
                )
    return BatchPlan(expressions, out_dir, plans, skip_existing, probabilities)


def run_batch(
    batch: BatchPlan,
    segmenter: Callable,
    *,
    bands: Sequence[int] | None = None,
    progress: bool = True,
    min_area: float | None = None,
    vector_crs=None,
) -> list[dict]:
    """Segment a prepared batch, writing its outputs and ``summary.csv``.

    The model reads each image once (all expressions in one batched call). An image that cannot
    be read (or is smaller than 32 px) is recorded with status ``error`` and its message, and
    the run goes on. ``out_dir/summary.csv`` lists every (image, expression) pair: mask path,
    status (``ok``/``skipped``/``error``), foreground percentage, size and seconds per image;
    it is written even when the run is interrupted.

    Args:
        batch: from :func:`prepare_batch`.
        segmenter: a :class:`~rrsis.infer.predictor.Segmenter`.
        bands: 1-based bands read as red, green, blue (see :func:`~rrsis.data.io.read_image`).
        progress: show a progress bar.
        min_area: drop smaller polygons from the GeoJSON (CRS units squared, else pixels).
        vector_crs: write the polygons in this CRS (e.g. ``"EPSG:4326"``); an image without
            a CRS then gets an ``error`` row.

    Returns:
        The summary rows (dicts with :data:`SUMMARY_FIELDS`).
    """
    from tqdm.auto import tqdm

    expressions = batch.expressions
    check = getattr(segmenter, "_check_expressions", None)
    if check is not None:  # the Segmenter's cleaning (and warnings)
        expressions = check(expressions)
    if vector_crs is not None:
        from rrsis.infer.vector import parse_crs

        vector_crs = parse_crs(vector_crs)  # a typo fails before the first image
    write = {"min_area": min_area, "vector_crs": vector_crs}
    batch.out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    try:
        for plan in tqdm(batch.images, desc="images", unit="image", disable=not progress):
            rows.extend(_predict_one(plan, batch, expressions, segmenter, bands, write))
    finally:  # an interrupted run still lists what it wrote
        _write_summary(batch.out_dir / SUMMARY_NAME, rows)
    return rows


#: Keywords of :func:`predict_images` that go to :func:`prepare_batch` (the rest: run_batch).
_PREPARE_OPTIONS = (
    "mask_format",
    "overlay",
    "vector",
    "recursive",
    "overwrite",
    "skip_existing",
    "probabilities",
)


def predict_images(
    inputs: Sequence[str | Path],
    expressions: str | Sequence[str],
    out_dir: str | Path,
    segmenter: Callable,
    **options: Any,
) -> list[dict]:
    """Segment every image of ``inputs`` for each expression, writing masks into ``out_dir``.

    :func:`prepare_batch` (every output checked before the first image is read, so a run never
    replaces files unless ``overwrite``) followed by :func:`run_batch`.

    Args:
        inputs, expressions, out_dir: as for :func:`prepare_batch`.
        segmenter: a :class:`~rrsis.infer.predictor.Segmenter`.
        **options: the keywords of :func:`prepare_batch` (``mask_format``, ``overlay``,
            ``vector``, ``recursive``, ``overwrite``, ``skip_existing``, ``probabilities``)
            and of :func:`run_batch` (``bands``, ``progress``, ``min_area``, ``vector_crs``).

    Returns:
        The summary rows (dicts with :data:`SUMMARY_FIELDS`).
    """
    prepare = {k: options.pop(k) for k in _PREPARE_OPTIONS if k in options}
    return run_batch(prepare_batch(inputs, expressions, out_dir, **prepare), segmenter, **options)


def _error_rows(base: dict, expressions: list[str], image: Path, message: str) -> list[dict]:
    where = "" if str(image) in message else f"{image}: "
    warnings.warn(f"skipped {where}{message}", UserWarning, stacklevel=4)
    return [
        base
        | {"expression": e, "mask": "", "status": "error", "foreground_pct": "", "error": message}
        for e in expressions
    ]


def _predict_one(
    plan: PlannedImage,
    batch: BatchPlan,
    expressions: list[str],
    segmenter: Callable,
    bands: Sequence[int] | None,
    write: dict[str, Any],
) -> list[dict]:
    """Summary rows of one planned image, after writing its outputs.

    ``write``: :func:`write_prediction` options (``min_area``, ``vector_crs``).
    """
    from rrsis.infer.predictor import to_rgb_uint8

    base = {"image": str(plan.image), "width": "", "height": "", "seconds": "", "error": ""}
    if batch.skip_existing and all(p.exists() for p in plan.outputs()):
        return [
            base | {"expression": e, "mask": str(m), "status": "skipped", "foreground_pct": ""}
            for e, m in zip(expressions, plan.masks)
        ]
    start = time.perf_counter()
    try:
        image = to_rgb_uint8(plan.image, bands)
    except (DatasetError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        return _error_rows(base, expressions, plan.image, message)
    georef = georeference(plan.image, image.shape[:2])
    if write["vector_crs"] is not None and plan.vectors[0] is not None and georef is None:
        message = "no CRS to reproject its polygons from (--vector-crs)"
        return _error_rows(base, expressions, plan.image, message)
    probs = segmenter(image, expressions, return_probs=True) if batch.probabilities else None
    masks = (
        segmenter(image, expressions) if probs is None else [p > segmenter.threshold for p in probs]
    )
    for k, (expression, mask) in enumerate(zip(expressions, masks)):
        write_prediction(
            mask,
            plan.masks[k],
            expression=expression,
            image=image,
            overlay=plan.overlays[k],
            vector=plan.vectors[k],
            georef=georef,
            probabilities=None if probs is None else probs[k],
            **write,
        )
    seconds = f"{time.perf_counter() - start:.3f}"
    height, width = image.shape[:2]
    return [
        base
        | {
            "expression": expression,
            "mask": str(mask_path),
            "status": "ok",
            "foreground_pct": f"{mask.mean() * 100:.3f}",
            "width": width,
            "height": height,
            "seconds": seconds,
        }
        for expression, mask, mask_path in zip(expressions, masks, plan.masks)
    ]
