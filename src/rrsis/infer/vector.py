"""Masks -> polygons -> GeoJSON, streamed band by band.

Polygons come from :func:`rasterio.features.shapes` (4-connected pixel regions, exact pixel edges)
and are mapped to the scene CRS with the raster's geotransform. The GeoJSON file is a
``FeatureCollection`` whose features carry ``{"expression": str, "band": int}``; coordinates are in
the scene CRS (not necessarily WGS84, unlike RFC 7946), which the legacy ``"crs"`` member names
(``urn:ogc:def:crs:EPSG::<code>``, or the CRS WKT when it has no EPSG code; absent for rasters
without a CRS, whose coordinates are then those of the geotransform).

Streaming: a scene is vectorised per band of rows. Polygons that do not touch the band's inner
edges are written at once; those that do are held back and merged with their neighbours from the
next bands at the end, so an object crossing a band edge becomes one polygon.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rrsis.data.files import publish, temp_path
from rrsis.errors import OutputExistsError, RRSISError


def _crs_member(crs) -> dict | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


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
    """Writes the polygons of several masks, fed in bands of rows, to one GeoJSON file.

    Args:
        path: output ``.geojson``; written to a temporary file beside it
            (:func:`rrsis.data.files.temp_path`) and published by :meth:`close`.
        crs: rasterio CRS of the raster (or ``None``).
        transform: the raster's affine geotransform (pixel -> CRS).
        height: raster height in px (to know which band edges are inner edges).
        names: one expression per mask band.
        simplify: simplification tolerance in CRS units, or ``None``.
        overwrite: replace an existing ``path``; without it, a ``path`` that appeared while
            writing is refused at :meth:`close`.
        min_area: drop polygons smaller than this, in CRS units squared (m² for a projected
            CRS; pixels without a geotransform), measured on the whole object, after the
            objects cut by band edges are merged; ``None`` keeps every polygon.
        dst_crs: write coordinates in this CRS instead (e.g. ``"EPSG:4326"``, lon/lat as
            RFC 7946 and web maps expect); needs the raster's ``crs``. Areas, ``min_area`` and
            ``simplify`` stay in the raster's CRS units.

    Each feature's properties are ``expression``, ``band`` (1-based) and ``area`` (the raster
    CRS's units squared, before simplification).
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_path(self.path)
        self._file = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.transform = transform
        self.height = height
        self.names = list(names)
        self.simplify = simplify
        self.min_area = min_area
        self.dropped = 0  # polygons under min_area
        self._pending: list[list] = [[] for _ in self.names]
        self._count = 0
        header: dict = {"type": "FeatureCollection"}
        crs_member = _crs_member(crs if dst_crs is None else dst_crs)
        if crs_member is not None:
            header["crs"] = crs_member
        # Write the header by hand so features can be streamed into the open array.
        self._file.write(json.dumps(header)[:-1] + ', "features": [\n')

    def _write(self, band: int, polygon) -> None:
        from shapely.affinity import affine_transform
        from shapely.geometry import mapping

        t = self.transform
        geom = affine_transform(polygon, [t.a, t.b, t.d, t.e, t.c, t.f])
        area = geom.area
        if self.min_area and area < self.min_area:
            self.dropped += 1
            return
        if self.simplify:
            geom = geom.simplify(self.simplify, preserve_topology=True)
        geometry = mapping(geom)
        if self.dst_crs is not None:
            from rasterio.warp import transform_geom

            geometry = transform_geom(self.src_crs, self.dst_crs, geometry)
        feature = {
            "type": "Feature",
            "properties": {"expression": self.names[band], "band": band + 1, "area": area},
            "geometry": geometry,
        }
        if self._count:
            self._file.write(",\n")
        self._file.write(json.dumps(feature))
        self._count += 1

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

    def close(self) -> None:
        """Merge held-back polygons, finish the file and move it into place."""
        from shapely import unary_union

        for band, polygons in enumerate(self._pending):
            if not polygons:
                continue
            merged = unary_union(polygons)
            for polygon in getattr(merged, "geoms", [merged]):
                self._write(band, polygon)
        self._pending = [[] for _ in self.names]
        self._file.write("\n]}\n")
        self._file.close()
        publish(self._tmp, self.path, self.overwrite)  # the umask's mode, exclusive

    def abort(self) -> None:
        """Drop the partial file (after an error)."""
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


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
    """Write the polygons of in-memory masks to GeoJSON (pixel coordinates without transform).

    Args:
        path: output ``.geojson``.
        masks: ``bool (E, H, W)`` or ``(H, W)``.
        names: one expression per mask.
        transform: affine geotransform; ``None`` keeps pixel coordinates ``(col, row)``.
        crs: rasterio CRS or ``None``.
        simplify: tolerance in output units.
        overwrite: replace an existing file.
        min_area: drop smaller polygons (output units squared; see :class:`BandVectorizer`).
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
