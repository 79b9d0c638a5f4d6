"""Masks -> polygons -> a vector layer, fed band by band.

Polygons come from :func:`rasterio.features.shapes` (4-connected pixel regions, exact pixel edges)
and are mapped to the scene CRS with the raster's geotransform. The file's format follows its
extension (GeoPackage, Shapefile, GeoJSON, FlatGeobuf: :mod:`rrsis.infer.layers`); its features
carry ``expression``, ``band``, ``area_m2`` (geodesic, :class:`~rrsis.infer.layers.AreaMeter`;
absent without a CRS) and ``area`` (the raster CRS's units squared, or pixels without
georeferencing). Coordinates are in the scene CRS, or ``dst_crs``; GeoJSON in lon/lat is
RFC 7946.

Streaming: a scene is vectorised per band of rows. Polygons that do not touch the band's inner
edges are final at once; those that do are held back and merged with their neighbours from the
next bands at the end, so an object crossing a band edge becomes one polygon. The layer is
written when the writer closes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rrsis.data.files import temp_path
from rrsis.errors import OutputExistsError, RRSISError
from rrsis.infer.layers import AreaMeter, vector_driver, write_layer


def parse_crs(text):
    """A rasterio CRS from ``"EPSG:4326"``, a WKT or PROJ string (raises :class:`RRSISError`)."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(text)
    except (CRSError, ValueError, TypeError) as err:
        raise RRSISError(f"unknown CRS {text!r} ({err})") from None


def mask_polygons(mask: np.ndarray, row_offset: int = 0) -> list:
    """Polygons of the foreground of ``mask`` in pixel coordinates.

    Args:
        mask: ``bool (h, w)``.
        row_offset: row of ``mask``'s first line in the full raster.

    Returns:
        shapely Polygons whose vertices are pixel corners ``(col, row)`` of the full raster.
    """
    from rasterio import features
    from rasterio.transform import Affine
    from shapely.geometry import shape

    if not mask.any():
        return []
    data = mask.astype(np.uint8)
    transform = Affine.translation(0, row_offset)
    return [
        shape(geom)
        for geom, value in features.shapes(data, mask=mask, transform=transform)
        if value == 1
    ]


class BandVectorizer:
    """Collects the polygons of several masks, fed in bands of rows, into one vector file.

    Args:
        path: output ``.gpkg``, ``.shp``, ``.geojson``/``.json`` or ``.fgb`` (an unknown
            extension is refused here); written to a temporary file beside it and published by
            :meth:`close` (:func:`rrsis.infer.layers.write_layer`).
        crs: rasterio CRS of the raster (or ``None``).
        transform: the raster's affine geotransform (pixel -> CRS).
        height: raster height in px (to know which band edges are inner edges).
        names: one expression per mask band.
        simplify: simplification tolerance in CRS units, or ``None``.
        overwrite: replace an existing ``path``; without it, a ``path`` that appeared while
            writing is refused at :meth:`close`.
        min_area: drop polygons smaller than this, in m² (geodesic, whatever the CRS; pixels
            without a CRS), measured on the whole object, after the objects cut by band edges
            are merged; ``None`` or 0 keeps every polygon.
        dst_crs: write coordinates in this CRS instead (e.g. ``"EPSG:4326"``, lon/lat as
            RFC 7946 and web maps expect); needs the raster's ``crs``.

    Each feature's properties are ``expression``, ``band`` (1-based), ``area_m2`` (with a CRS)
    and ``area`` (the raster CRS's units squared, or pixels), both before simplification.
    """

    def __init__(
        self,
        path: str | Path,
        crs,
        transform,
        height: int,
        names: Sequence[str],
        simplify: float | None = None,
        overwrite: bool = False,
        min_area: float | None = None,
        dst_crs=None,
    ) -> None:
        if min_area is not None and min_area < 0:
            raise ValueError(f"min_area must be >= 0, got {min_area}")
        vector_driver(path)
        if dst_crs is not None:
            if crs is None:
                raise RRSISError(
                    "polygons can be reprojected only from a georeferenced raster (this one "
                    "has no CRS)"
                )
            dst_crs = parse_crs(dst_crs)
        self.src_crs, self.dst_crs = crs, dst_crs
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path}: output exists (use --overwrite to replace it)")
        self.overwrite = overwrite
        self._tmp = temp_path(self.path)  # written at close(), then published
        self.transform = transform
        self.height = height
        self.names = list(names)
        self.simplify = simplify
        self.min_area = min_area
        self.measure = AreaMeter(crs)
        self.dropped = 0  # polygons under min_area
        self._pending: list[list] = [[] for _ in self.names]
        self.geometries: list = []
        self.fields: dict[str, list] = {"expression": [], "band": []}
        if crs is not None:
            self.fields["area_m2"] = []
        self.fields["area"] = []

    def _write(self, band: int, polygon) -> None:
        from shapely.affinity import affine_transform

        t = self.transform
        geom = affine_transform(polygon, [t.a, t.b, t.d, t.e, t.c, t.f])
        area, area_m2 = geom.area, self.measure(geom)
        if self.min_area and (area if area_m2 is None else area_m2) < self.min_area:
            self.dropped += 1
            return
        if self.simplify:
            geom = geom.simplify(self.simplify, preserve_topology=True)
        if self.dst_crs is not None:
            from rasterio.warp import transform_geom
            from shapely.geometry import mapping, shape

            geom = shape(transform_geom(self.src_crs, self.dst_crs, mapping(geom)))
        self.geometries.append(geom)
        self.fields["expression"].append(self.names[band])
        self.fields["band"].append(band + 1)
        if area_m2 is not None:
            self.fields["area_m2"].append(area_m2)
        self.fields["area"].append(area)

    @property
    def count(self) -> int:
        """Polygons kept so far."""
        return len(self.geometries)

    def add_rows(self, masks: np.ndarray, row_offset: int) -> None:
        """Vectorise final rows.

        Args:
            masks: ``bool (E, h, W)``, one mask per expression.
            row_offset: raster row of the first line.
        """
        top, bottom = row_offset, row_offset + masks.shape[1]
        for band, mask in enumerate(masks):
            for polygon in mask_polygons(mask, row_offset):
                _, miny, _, maxy = polygon.bounds
                touches_edge = (top > 0 and miny <= top) or (
                    bottom < self.height and maxy >= bottom
                )
                if touches_edge:
                    self._pending[band].append(polygon)
                else:
                    self._write(band, polygon)

    def finish(self) -> None:
        """Merge the held-back polygons (after the last rows)."""
        from shapely import unary_union

        for band, polygons in enumerate(self._pending):
            if not polygons:
                continue
            merged = unary_union(polygons)
            for polygon in getattr(merged, "geoms", [merged]):
                self._write(band, polygon)
        self._pending = [[] for _ in self.names]

    def close(self, skip_empty: bool = False) -> bool:
        """Merge held-back polygons and write the file (not when empty and ``skip_empty``).

        Returns:
            Whether a file was written.
        """
        self.finish()
        if skip_empty and not self.geometries:
            return False
        crs = self.dst_crs if self.dst_crs is not None else self.src_crs
        fields = dict(self.fields)
        fields["band"] = np.asarray(fields["band"], dtype=np.int32)
        write_layer(self.path, self.geometries, fields, crs, self.overwrite, self._tmp)
        return True

    def abort(self) -> None:
        """Drop what was collected (after an error); nothing is on disk before :meth:`close`."""
        self.geometries.clear()
        self._pending = [[] for _ in self.names]


def write_geojson(
    path: str | Path,
    masks: np.ndarray,
    names: Sequence[str],
    transform=None,
    crs=None,
    simplify: float | None = None,
    overwrite: bool = False,
    min_area: float | None = None,
) -> Path:
    """Write the polygons of in-memory masks (pixel coordinates without transform).

    Args:
        path: output ``.gpkg``, ``.shp``, ``.geojson``/``.json`` or ``.fgb``.
        masks: ``bool (E, H, W)`` or ``(H, W)``.
        names: one expression per mask.
        transform: affine geotransform; ``None`` keeps pixel coordinates ``(col, row)``.
        crs: rasterio CRS or ``None``.
        simplify: tolerance in output units.
        overwrite: replace an existing file.
        min_area: drop smaller polygons (m², or pixels without ``crs``; see :class:`BandVectorizer`).
    """
    from rasterio.transform import Affine

    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    writer = BandVectorizer(
        path,
        crs,
        transform or Affine.identity(),
        masks.shape[1],
        names,
        simplify,
        overwrite,
        min_area=min_area,
    )
    try:
        writer.add_rows(masks, 0)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return Path(path)
