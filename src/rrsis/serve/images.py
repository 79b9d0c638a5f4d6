"""An uploaded (or bundled) image: checked from its header, decoded, and drawn for the page.

An upload is written into the request's temporary folder under its own base name, its size is
read from the header (:func:`rrsis.data.io.image_shape`) and refused over the pixel limit before
it is decoded; it is then read as every command reads images
(:func:`~rrsis.infer.images.to_rgb_uint8`, :func:`~rrsis.infer.outputs.georeference`), so
errors have the command line's wording.

A georeferenced image is drawn for the map on a Web Mercator grid (``EPSG:3857``, the map's own
projection), so that the image, its masks and its polygons line up exactly on the page.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rrsis.data.io import image_shape
from rrsis.errors import ImageReadError
from rrsis.infer.images import to_rgb_uint8
from rrsis.infer.outputs import georeference
from rrsis.serve.config import Limits
from rrsis.serve.forms import Upload, too_large

#: Longest side of the pictures sent to the page (the masks keep the image's own size).
PREVIEW_SIDE = 2048
#: Nodes per side of the lon/lat -> image CRS lattice the page interpolates cursor positions on.
GRID_NODES = 9
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def png_base64(array: np.ndarray) -> str:
    """``uint8 (H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` as a base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _shrink(array: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    height, width = array.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR))


@dataclass
class MapGrid:
    """The Web Mercator grid a georeferenced image is drawn on for the map."""

    transform: object  # affine, EPSG:3857 metres
    width: int
    height: int
    bounds: list[list[float]]  # [[south, west], [north, east]] in degrees

    def warp(self, band: np.ndarray, src_crs, src_transform, nearest: bool) -> np.ndarray:
        """``band (H, W)`` on this grid (0 outside the image)."""
        from rasterio.warp import Resampling, reproject

        out = np.zeros((self.height, self.width), dtype=band.dtype)
        reproject(
            band,
            out,
            src_transform=src_transform,
            src_crs=src_crs,
            dst_transform=self.transform,
            dst_crs="EPSG:3857",
            resampling=Resampling.nearest if nearest else Resampling.bilinear,
            src_nodata=None,
            dst_nodata=0,
        )
        return out


def map_grid(shape: tuple[int, int], crs, transform) -> MapGrid:
    """The Web Mercator grid covering an image of ``shape`` on ``(crs, transform)``."""
    from affine import Affine
    from pyproj import Transformer
    from rasterio.transform import array_bounds
    from rasterio.warp import calculate_default_transform

    height, width = shape
    west, south, east, north = array_bounds(height, width, transform)
    dst, dst_width, dst_height = calculate_default_transform(
        crs, "EPSG:3857", width, height, left=west, bottom=south, right=east, top=north
    )
    scale = max(dst_width, dst_height) / PREVIEW_SIDE
    if scale > 1:
        dst = dst @ Affine.scale(scale)
        dst_width, dst_height = round(dst_width / scale), round(dst_height / scale)
    to_lonlat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    lon0, lat0 = to_lonlat.transform(dst.c, dst.f + dst.e * dst_height)
    lon1, lat1 = to_lonlat.transform(dst.c + dst.a * dst_width, dst.f)
    return MapGrid(dst, dst_width, dst_height, [[lat0, lon0], [lat1, lon1]])


def cursor_lattice(bounds: list[list[float]], crs) -> dict:
    """Image-CRS coordinates at a lattice of lon/lat points over ``bounds``.

    The page interpolates the cursor's coordinates in the image's CRS on it (bilinear; for an
    image's extent the projection is smooth enough that this is exact to well under a pixel).
    """
    from pyproj import Transformer

    (south, west), (north, east) = bounds
    lons = np.linspace(west, east, GRID_NODES)
    lats = np.linspace(south, north, GRID_NODES)
    lon, lat = np.meshgrid(lons, lats)
    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = to_crs.transform(lon, lat)
    return {"lon": [west, east], "lat": [south, north], "x": x.tolist(), "y": y.tolist()}


@dataclass
class LoadedImage:
    """An image ready for the Segmenter and the page."""

    name: str
    array: np.ndarray  # uint8 (H, W, 3)
    georef: tuple | None  # (crs, transform), both known
    grid: MapGrid | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape[0], self.array.shape[1]

    def describe(self) -> dict:
        """Name, size and CRS of the image (no pixels)."""
        height, width = self.shape
        info: dict = {"name": self.name, "width": width, "height": height}
        info["georeferenced"] = self.georef is not None
        if self.georef is not None:
            crs, transform = self.georef
            info["crs"] = crs.to_string()
            info["transform"] = [transform.a, transform.b, transform.c]
            info["transform"] += [transform.d, transform.e, transform.f]
        return info

    def view(self) -> dict:
        """:meth:`describe` with the picture the page shows, and the map's grid."""
        info = self.describe()
        info["preview_png"] = png_base64(_shrink(self.array))
        if self.grid is not None:
            crs, transform = self.georef
            rgba = np.dstack(
                [self.grid.warp(self.array[..., c], crs, transform, False) for c in range(3)]
                + [self.grid.warp(np.full(self.shape, 255, np.uint8), crs, transform, True)]
            )
            info["map"] = {
                "png": png_base64(rgba),
                "bounds": self.grid.bounds,
                "lattice": cursor_lattice(self.grid.bounds, crs),
            }
        return info


def _written(upload: Upload, folder: Path) -> Path:
    name = upload.filename
    is_tiff = upload.data[:4] in TIFF_MAGIC
    if is_tiff and Path(name).suffix.lower() not in (".tif", ".tiff"):
        name += ".tif"  # the readers choose the TIFF decoder by suffix
    path = folder / name
    path.write_bytes(upload.data)
    return path


def _check_header(path: Path, limits: Limits) -> None:
    try:
        height, width = image_shape(path)
    except ImageReadError:
        # Not an image at all: let the reader every command uses say so, in its own words
        # (it fails on the first bytes; nothing large is decoded).
        to_rgb_uint8(path)
        raise
    if height * width > limits.max_pixels:
        raise too_large(
            f"{path.name}: image ({width}x{height})", height * width, limits.max_pixels, "pixels"
        )


def load_image(source: Upload | Path, folder: Path, limits: Limits) -> LoadedImage:
    """Check, decode and georeference an upload (written into ``folder``) or a bundled file.

    Raises:
        RequestRefused: an upload over ``limits.max_pixels`` (413), from its header alone.
        ImageReadError: not an image, truncated, unsupported layout (the readers' errors).
    """
    if isinstance(source, Upload):
        path = _written(source, folder)
        _check_header(path, limits)
    else:
        path = source  # a bundled sample
    array = to_rgb_uint8(path)
    georef = georeference(path, array.shape[:2])
    if georef is not None and georef[0] is None:
        georef = None  # a grid without a CRS cannot be placed on a map
    grid = None if georef is None else map_grid(array.shape[:2], *georef)
    return LoadedImage(path.name, array, georef, grid)
