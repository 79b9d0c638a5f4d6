"""Which bands of a multi-band file are red, green and blue.

GeoTIFFs say so in their colour interpretation: the TIFF photometric tag (RGB, with an alpha
extra sample) and GDAL's ``COLORINTERP`` items in the ``GDAL_METADATA`` tag, which is where GDAL
(and rasterio's ``ds.colorinterp``) keeps any other order, such as blue, green, red, NIR.
When the bands tagged red, green and blue exist they are used; a 4-band file
without them is a guess (the first three read as red, green, blue), reported with a
:class:`~rrsis.errors.DataWarning` naming the file and ``--bands R,G,B``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import tifffile

from rrsis.errors import DataWarning

_RGB = ("red", "green", "blue")
_PHOTOMETRIC_RGB = 2
_ALPHA_SAMPLES = (1, 2)  # associated, unassociated alpha
_COLORINTERP_ITEM = re.compile(
    r'<Item name="COLORINTERP" sample="(\d+)" role="colorinterp">\s*([^<]*?)\s*</Item>'
)


def tiff_colour_names(page, count: int) -> list[str]:
    """Lower-case colour interpretation of each of the ``count`` bands of a tifffile page, as
    GDAL reports it (``red``, ``green``, ``blue``, ``alpha``, ``gray``, ``undefined``, ...)."""
    names = ["undefined"] * count
    photometric = int(getattr(page, "photometric", 1) or 0)
    if photometric == _PHOTOMETRIC_RGB and count >= 3:
        names[:3] = _RGB
        for index, kind in enumerate(getattr(page, "extrasamples", ()) or (), start=3):
            if index < count and int(kind) in _ALPHA_SAMPLES:
                names[index] = "alpha"
    elif photometric in (0, 1) and count:
        names[0] = "gray"
    tag = page.tags.get("GDAL_METADATA")
    if tag is not None and isinstance(tag.value, str):
        for sample, name in _COLORINTERP_ITEM.findall(tag.value):
            if int(sample) < count:
                names[int(sample)] = name.lower()
    return names


def read_colour_names(path: Path, count: int) -> list[str] | None:
    """Colour interpretation of a TIFF's bands (:func:`tiff_colour_names`); ``None`` for other
    formats or a header that cannot be read."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            return tiff_colour_names(tif.pages[0], count)
    except Exception:  # the pixels were read already; a header quirk only loses the tags
        return None


def tagged_rgb(names: Sequence[str] | None) -> list[int] | None:
    """1-based numbers of the bands tagged red, green, blue (first of each), or ``None``."""
    if not names:
        return None
    names = [str(name).lower() for name in names]
    if not all(colour in names for colour in _RGB):
        return None
    return [names.index(colour) + 1 for colour in _RGB]


def default_bands(count: int, names: Sequence[str] | None, path: Path | None) -> list[int] | None:
    """The bands to read as red, green, blue when none were chosen.

    Returns the bands tagged red, green, blue when ``names`` (the colour interpretation) has
    them, ``[1, 2, 3]`` with one :class:`DataWarning` for 4 bands without them, and
    ``None`` (the plain 1/3-band rules) otherwise.
    """
    tagged = tagged_rgb(names)
    if tagged is not None:
        return tagged
    if count != 4 or names is None:
        # grey, RGB, a format without colour tags (PNG RGBA), or 5+ bands: refused unless chosen
        return None
    if str(names[3]).lower() == "alpha":
        return None
    told = ", ".join(str(n).lower() for n in names)
    warnings.warn(
        f"{path}: {count} bands without red/green/blue colour tags ({told}); bands 1,2,3 "
        "were read as red, green, blue; choose others with --bands R,G,B",
        DataWarning,
        stacklevel=3,
    )
    return [1, 2, 3]
