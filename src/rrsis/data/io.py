"""Image and mask readers/writers shared by every dataset format.

Conventions:

* Images come back as ``uint8 (H, W, 3)``. TIFFs (``.tif``/``.tiff``) are read with
  tifffile, which handles the PackBits compression RefSegRS uses; everything else goes
  through Pillow.
* 16-bit (or any non-8-bit) images are mapped to ``uint8`` with a per-band 2-98 percentile
  stretch, the usual quick-look rendering for remote sensing rasters: values at or below the
  2nd percentile become 0, values at or above the 98th become 255, linear in between.
* TIFF bands tagged red, green, blue (GeoTIFF colour interpretation, :mod:`rrsis.data.bands`)
  are read as such. Otherwise one band is replicated to three; four bands (RGBA or RGB+NIR)
  keep the first three, with a warning unless the fourth is tagged alpha; any other band
  count is refused.
* Masks come back as ``bool (H, W)``: ``value > threshold``. The default threshold is 0;
  the reference RefSegRS/LAVT loaders binarise with ``> 50`` to be robust to resampled
  masks, pass ``threshold=50`` to reproduce them. Multi-channel masks use the first channel.
* Writers produce TIFFs atomically (:func:`rrsis.data.files.atomic_write`) so an interrupted
  run never leaves a half-written file behind; masks are stored as ``uint8`` 0/255.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from rrsis.data.bands import default_bands, read_colour_names
from rrsis.data.files import atomic_write
from rrsis.errors import ImageReadError

_TIFF_SUFFIXES = {".tif", ".tiff"}


def read_raw(path: Path) -> np.ndarray:
    """Decode ``path`` into a numpy array, channel-last, without any conversion."""
    if not path.is_file():
        raise ImageReadError("image file not found", path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                array = series.asarray()
                axes = series.axes
            if array.ndim == 3 and axes.endswith("YX"):
                # Planar TIFFs (bands first, GDAL's default) -> channel-last.
                array = np.moveaxis(array, 0, -1)
        else:
            with Image.open(path) as img:
                img.load()
                if img.mode == "P":
                    # Palette images: expand so that values are colours, not indices.
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                array = np.asarray(img)
    except ImageReadError:
        raise
    except Exception as err:  # decoders raise many types for truncated/corrupt files
        raise ImageReadError(f"cannot decode image ({type(err).__name__}: {err})", path) from err
    return array


def image_shape(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header, without decoding the pixels.

    Raises:
        ImageReadError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError("image file not found", path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape = dict(zip(series.axes, series.shape))
            return int(shape["Y"]), int(shape["X"])
        with Image.open(path) as img:
            width, height = img.size
        return int(height), int(width)
    except Exception as err:  # decoders raise many types for truncated/corrupt files
        raise ImageReadError(f"cannot read image size ({type(err).__name__}: {err})", path) from err


def stretch_to_uint8(array: np.ndarray) -> np.ndarray:
    """Per-band 2-98 percentile stretch of ``(H, W, C)`` data to ``uint8``."""
    data = array.astype(np.float64)
    out = np.empty(data.shape, dtype=np.uint8)
    for band in range(data.shape[-1]):
        values = data[..., band]
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, [2, 98]) if finite.size else (0.0, 0.0)
        if high <= low:
            # Constant band: nothing to stretch, map it to black rather than divide by 0.
            out[..., band] = 0
            continue
        # NaN / inf (nodata in float rasters) become 0, like values below the 2nd percentile.
        scaled = np.nan_to_num(
            (values - low) / (high - low) * 255.0, nan=0.0, posinf=255.0, neginf=0.0
        )
        out[..., band] = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return out


def check_bands(bands, count: int, path: Path | None = None) -> list[int]:
    """The 1-based band numbers ``bands`` (3: red, green, blue; or 1: grey) of a ``count``-band
    image, as a list.

    Raises:
        ImageReadError: not 1 or 3 band numbers, or one outside ``1..count``.
    """
    bands = [int(b) for b in bands]
    if len(bands) not in (1, 3) or not all(1 <= b <= count for b in bands):
        raise ImageReadError(
            f"bands {','.join(map(str, bands))} do not fit this {count}-band image "
            f"(give 3 band numbers, red,green,blue, or 1, each in 1..{count})",
            path,
        )
    return bands


def select_bands(array: np.ndarray, bands, path: Path | None = None) -> np.ndarray:
    """``array (H, W, C)`` reduced to the 1-based ``bands`` (see :func:`check_bands`)."""
    return array[..., [b - 1 for b in check_bands(bands, array.shape[-1], path)]]


def read_image(path: str | Path, bands=None) -> np.ndarray:
    """Read an image file as RGB ``uint8``.

    Args:
        path: ``.tif``/``.tiff`` (tifffile) or any format Pillow reads (JPEG, PNG, ...).
        bands: optional 1-based band numbers to read as red, green, blue (or one, grey), for
            multispectral files; ``None``: the bands tagged red, green, blue, else 1, 3 or 4
            bands by the rules above.

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        ImageReadError: missing, truncated or undecodable file, or an unsupported band count.
    """
    path = Path(path)
    array = read_raw(path)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ImageReadError(f"expected a 2-D image, got array of shape {array.shape}", path)
    if bands is None and array.shape[-1] > 1:
        bands = default_bands(array.shape[-1], read_colour_names(path, array.shape[-1]), path)
    if bands is not None:
        array = select_bands(array, bands, path)
    bands = array.shape[-1]
    if bands not in (1, 3, 4):
        raise ImageReadError(
            f"unsupported band count {bands} (need 1, 3 or 4: grey, RGB, RGBA/RGBN; choose "
            "the red, green and blue bands of a multispectral image with --bands R,G,B)",
            path,
        )
    if bands == 4:
        array = array[..., :3]  # RGBA or RGB+NIR: keep the visible bands
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = stretch_to_uint8(array)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


def read_mask(path: str | Path, threshold: float = 0) -> np.ndarray:
    """Read a mask file as booleans.

    Args:
        path: mask image (single channel; for multi-channel files the first channel is used).
        threshold: foreground is ``value > threshold``. Reference loaders use 50.

    Returns:
        ``bool`` array of shape ``(H, W)``.

    Raises:
        ImageReadError: missing or undecodable file.
    """
    path = Path(path)
    array = read_raw(path)
    if array.ndim == 3:
        array = array[..., 0]
    if array.ndim != 2:
        raise ImageReadError(f"expected a 2-D mask, got array of shape {array.shape}", path)
    return np.ascontiguousarray(array > threshold)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool ``(H, W)`` mask to ``(height, width)`` with PIL.

    PIL's NEAREST, as the reference LAVT / RMSIN / RefSegRS loaders resize masks (torch's
    ``nearest-exact`` picks other source rows and columns for some sizes, e.g. 512 -> 480).
    """
    if mask.shape == (height, width):
        return mask
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8) * 255)
    return np.asarray(image.resize((width, height), Image.NEAREST)) > 127


@lru_cache(maxsize=1)
def tiff_compression() -> str | None:
    """PackBits when ``imagecodecs`` (a declared dependency) can encode it, else ``None``.

    Without it (e.g. a bare GPU image that has tifffile but not imagecodecs) TIFFs are written
    uncompressed: the same pixels, larger files; tifffile reads both without imagecodecs.
    """
    try:
        import imagecodecs
    except ImportError:
        return None
    return "packbits" if hasattr(imagecodecs, "packbits_encode") else None


def _atomic_tiff(path: Path, array: np.ndarray, photometric: str, overwrite: bool) -> None:
    compression = tiff_compression()
    atomic_write(
        path,
        lambda tmp: tifffile.imwrite(tmp, array, photometric=photometric, compression=compression),
        overwrite=overwrite,
    )


def write_image(path: str | Path, array: np.ndarray, overwrite: bool = True) -> None:
    """Write an RGB image as a PackBits TIFF (the RefSegRS layout).

    Args:
        path: destination file; parent directories are created.
        array: ``uint8`` of shape ``(H, W, 3)``.
        overwrite: replace an existing file (else :class:`~rrsis.errors.OutputExistsError`).

    Raises:
        ValueError: wrong dtype or shape (a programming error, not a user one).
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"write_image needs uint8 (H, W, 3), got {array.dtype} {array.shape}")
    _atomic_tiff(Path(path), array, photometric="rgb", overwrite=overwrite)


def write_mask(path: str | Path, mask: np.ndarray, overwrite: bool = True) -> None:
    """Write a boolean mask as a single-channel ``uint8`` TIFF with values 0/255.

    Args:
        path: destination file; parent directories are created.
        mask: array of shape ``(H, W)``; non-zero is foreground.
        overwrite: replace an existing file (else :class:`~rrsis.errors.OutputExistsError`).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"write_mask needs an (H, W) mask, got shape {mask.shape}")
    _atomic_tiff(Path(path), (mask != 0).astype(np.uint8) * 255, "minisblack", overwrite=overwrite)
