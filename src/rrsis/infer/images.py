"""The images inference accepts, converted to the ``uint8 (H, W, 3)`` the models read."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from rrsis.data.io import read_image, select_bands, stretch_to_uint8
from rrsis.errors import ImageReadError

ImageLike = np.ndarray | Image.Image | str | Path

#: Smallest accepted image side: below it the 1/32 feature map has no pixel left.
MIN_SIDE = 32
#: Pixels above which segmenting an image in memory, in windows, warns about memory.
LARGE_IN_MEMORY = 8192 * 8192


def to_rgb_uint8(image: ImageLike, bands: Sequence[int] | None = None) -> np.ndarray:
    """Convert any accepted image input to ``uint8 (H, W, 3)``.

    Files go through :func:`rrsis.data.io.read_image` (TIFF/JPEG/PNG, 1/4 bands, 16 bit). Arrays
    follow the same rules: ``(H, W)`` or one band is replicated, 4 bands keep the first three,
    non-``uint8`` data gets the per-band 2-98 percentile stretch. ``bands`` (1-based, three for
    red, green, blue or one for grey) picks the bands of a multispectral file or array first.

    Raises:
        ImageReadError: unreadable file, unsupported shape, or a side under 32 px.
    """
    source: Path | None = None
    if isinstance(image, (str, Path)):
        source = Path(image)
        array = read_image(source, bands)
    elif isinstance(image, Image.Image):
        if bands is not None:
            raise ImageReadError("bands= needs a file path or an array, not a PIL image")
        array = np.asarray(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = array[..., None]
        if bands is not None and array.ndim == 3:
            array = select_bands(array, bands)
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
            raise ImageReadError(
                f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array, got {image.shape}"
            )
        array = array[..., :3]
        if array.dtype != np.uint8:
            array = stretch_to_uint8(array)
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
    else:
        raise ImageReadError(f"unsupported image type {type(image).__name__}")
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageReadError(
            f"image is {width}x{height} px; both sides must be at least {MIN_SIDE} px", source
        )
    return np.ascontiguousarray(array)


def warn_about_size(
    shape: tuple[int, int], windows: bool, n_expr: int, input_size: int, stacklevel: int = 4
) -> None:
    """Warn when an image in memory is too large for the way it is read.

    Read whole, an image over 4 ``input_size`` loses its small objects to the resize; read in
    windows, one over :data:`LARGE_IN_MEMORY` pixels needs GiBs that a scene read window by
    window would not.
    """
    height, width = shape
    if not windows and max(shape) > 4 * input_size:
        warnings.warn(
            f"image is {width}x{height} px and is resized to {input_size}x{input_size}; use "
            "predict_scene (rrsis predict-scene) to keep full resolution",
            UserWarning,
            stacklevel=stacklevel,
        )
    if windows and height * width > LARGE_IN_MEMORY:
        # float32 probabilities per expression, plus the weight sum and the rules' maps.
        gib = height * width * 4 * (n_expr + 2) / 2**30
        warnings.warn(
            f"segmenting a {width}x{height} image in memory needs about {gib:.1f} GiB; "
            "predict_scene (rrsis predict-scene) reads and writes it window by window",
            UserWarning,
            stacklevel=stacklevel,
        )
