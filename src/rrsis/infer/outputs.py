"""What inference writes for one image: the mask (or probabilities), its overlay, its polygons.

``rrsis predict``, ``rrsis predict-batch`` and ``rrsis demo`` write through these functions;
every file is written atomically (a temporary file beside it, then published with the umask's
mode, see :mod:`rrsis.data.files`); an output location that cannot be written, or an existing
output, is refused before any work unless the caller allows replacing it (:func:`check_output`),
and one that appears while the run writes is refused when it is published.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from rrsis.data.files import atomic_write, outputs_of_run, prepare_output
from rrsis.data.io import tiff_compression, write_mask
from rrsis.errors import RRSISError
from rrsis.infer.vector import BandVectorizer

TIFF_SUFFIXES = (".tif", ".tiff")


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an output that exists (unless ``overwrite``) or cannot be written, in one line.

    The temporaries of killed runs in its folder are removed
    (:func:`rrsis.data.files.prepare_output`).
    """
    prepare_output(path, overwrite=overwrite)


def _grid(path: Path):
    """``(crs, transform, (height, width))`` from a TIFF's header, or ``None``."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    # rasterio (GDAL) loads only when a TIFF is actually inspected.
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return ds.crs, ds.transform, (ds.height, ds.width)
    except RasterioIOError:
        return None


def image_crs(path: Path):
    """The CRS of a raster file (``None`` for plain images or rasters without one).

    Reads the header only: preconditions that need a CRS (``--vector-crs``) are checked with it
    before any work.
    """
    header = _grid(path)
    return None if header is None else header[0]


def require_crs(path: Path) -> None:
    """Refuse, before any work, to reproject the polygons of an image without a CRS."""
    if image_crs(path) is None:
        raise RRSISError(
            f"{path}: has no CRS to reproject its polygons from (--vector-crs needs a "
            "georeferenced GeoTIFF)"
        )


def check_mask_format(output: Path, probabilities: bool = False) -> str | None:
    """PIL format name for a mask path (``None`` for TIFF); raises for unknown suffixes.

    ``probabilities`` (float32 output) needs a TIFF.
    """
    if output.suffix.lower() in TIFF_SUFFIXES:
        return None
    if probabilities:
        raise RRSISError(f"{output}: probabilities are written as float32 TIFF; use a .tif path")
    Image.init()
    try:
        return Image.EXTENSION[output.suffix.lower()]
    except KeyError as err:
        raise RRSISError(f"{output}: unknown image format {output.suffix!r}") from err


def georeference(path: Path, shape: tuple[int, int]):
    """``(crs, transform)`` of a georeferenced GeoTIFF of that shape, else ``None``."""
    header = _grid(path)
    if header is None:
        return None
    crs, transform, size = header
    if size != tuple(shape) or (crs is None and transform.is_identity):
        return None
    return crs, transform


def write_geotiff(path: Path, band: np.ndarray, crs, transform, overwrite: bool = False) -> None:
    """One band ``(H, W)`` on a grid (CRS and geotransform) as a GeoTIFF, atomically."""
    import rasterio

    profile = {"driver": "GTiff", "height": band.shape[0], "width": band.shape[1], "count": 1}
    profile |= {"dtype": band.dtype.name, "crs": crs, "transform": transform}
    profile |= {"compress": "deflate"}

    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(band[None])

    atomic_write(path, write, overwrite=overwrite)


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


def save_overlay(
    path: Path, image: np.ndarray, mask: np.ndarray, title: str, overwrite: bool = False
) -> None:
    """Write image + mask overlay with ``title`` above it as a PNG (atomic)."""
    # Figure directly (no pyplot): no GUI backend, works headless.
    from matplotlib.figure import Figure

    height, width = mask.shape
    fig = Figure(figsize=(6, 6 * height / width + 0.6), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1 - 0.6 / (6 * height / width + 0.6)))
    ax.imshow(overlay_image(image, mask))
    ax.set_axis_off()
    fig.suptitle("\n".join(textwrap.wrap(title, 60)), fontsize=10)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), overwrite=overwrite)


def _write_band(
    mask: np.ndarray, output: Path, georef, probabilities: np.ndarray | None, overwrite: bool
) -> None:
    fmt = check_mask_format(output, probabilities is not None)
    if fmt is not None:
        mask_image = Image.fromarray(mask.astype("uint8") * 255)
        atomic_write(output, lambda tmp: mask_image.save(tmp, format=fmt), overwrite=overwrite)
        return
    band = (
        mask.astype(np.uint8) * np.uint8(255)
        if probabilities is None
        else np.asarray(probabilities, np.float32)
    )
    if georef is not None:
        write_geotiff(output, band, *georef, overwrite=overwrite)
    elif probabilities is None:
        write_mask(output, mask, overwrite=overwrite)
    else:
        compression = tiff_compression()
        atomic_write(
            output,
            lambda tmp: tifffile.imwrite(tmp, band, compression=compression),
            overwrite=overwrite,
        )


def _write_polygons(
    mask, vector: Path, expression: str, georef, min_area, vector_crs, overwrite: bool, if_empty
) -> None:
    from affine import Affine  # comes with rasterio, loaded only for polygons

    crs, transform = georef or (None, Affine.identity())
    writer = BandVectorizer(
        vector,
        crs,
        transform,
        mask.shape[0],
        [expression],
        overwrite=overwrite,
        min_area=min_area,
        dst_crs=vector_crs,
    )
    try:
        writer.add_rows(mask[None], 0)
    except BaseException:
        writer.abort()
        raise
    writer.close(skip_empty=not if_empty)


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
    overwrite: bool = False,
    vector_if_empty: bool = True,
) -> None:
    """Write a mask (0/255), and optionally its overlay PNG and polygons, atomically.

    Callers check their outputs first (:func:`check_output`); a file that appeared meanwhile is
    refused (:class:`~rrsis.errors.OutputExistsError`) unless ``overwrite``. All or nothing: when
    a step fails, the files this call already wrote are removed.

    Args:
        mask: ``bool (H, W)``.
        output: ``.tif``/``.tiff`` (a GeoTIFF when ``georef`` is given) or any image format PIL
            writes (``.png``, ...).
        expression: the overlay's title and the polygons' ``expression`` property.
        image: ``uint8 (H, W, 3)``, needed for ``overlay``.
        overlay: overlay PNG path.
        vector: polygon file (``.gpkg``, ``.shp``, ``.geojson``, ``.fgb``: see
            :mod:`rrsis.infer.layers`); coordinates in ``georef``'s CRS, else in pixels.
        georef: ``(crs, transform)`` from :func:`georeference`, or ``None``.
        min_area: drop smaller polygons from ``vector``, in m² (geodesic; pixels without
            ``georef``); ``None`` keeps all.
        probabilities: ``float32 (H, W)``: write these to ``output`` (a TIFF) instead of the
            0/255 mask; the overlay and polygons still show ``mask``.
        vector_crs: write the polygons in this CRS (e.g. ``"EPSG:4326"``); needs ``georef``.
        overwrite: replace existing files.
        vector_if_empty: write ``vector`` even when the mask has no polygon left.
    """
    if overlay is not None and image is None:
        raise ValueError("an overlay needs the image")
    with outputs_of_run():
        _write_band(mask, output, georef, probabilities, overwrite)
        if overlay is not None:
            save_overlay(overlay, image, mask, expression, overwrite)
        if vector is not None:
            _write_polygons(
                mask, vector, expression, georef, min_area, vector_crs, overwrite, vector_if_empty
            )
