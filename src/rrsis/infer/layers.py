"""Polygon layers on disk: the format a path names, geodesic areas, atomic writes.

The format follows the extension (:data:`VECTOR_FORMATS`): GeoPackage, Shapefile, GeoJSON and
FlatGeobuf, written by GDAL through pyogrio. GeoJSON in a geographic CRS is RFC 7946 (lon/lat on
WGS84, no ``crs`` member, 7 decimals, about 1 cm); in a projected CRS it keeps the CRS, named by
GDAL's legacy ``crs`` member, with 3 decimals (mm). Areas are geodesic (:class:`AreaMeter`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rrsis.data.files import outputs_of_run, publish, temp_path
from rrsis.errors import OutputExistsError, RRSISError

VECTOR_FORMATS = {
    ".gpkg": "GPKG",
    ".shp": "ESRI Shapefile",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
}
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
MIN_AREA = 10.0
"""Default ``--min-area``: polygons under 10 m² (10 px without georeferencing) are speckle."""


def vector_driver(path: str | Path) -> str:
    """The GDAL driver for a polygon file's extension; one-line :class:`RRSISError` otherwise."""
    suffix = Path(path).suffix.lower()
    try:
        return VECTOR_FORMATS[suffix]
    except KeyError:
        known = ", ".join(VECTOR_FORMATS)
        raise RRSISError(
            f"{path}: unknown vector format {suffix or '(no extension)'!r} (use {known})"
        ) from None


def _pyproj_crs(crs):
    from pyproj import CRS

    return CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)


class AreaMeter:
    """Geodesic area in m² of polygons given in ``crs`` (``None``: pixel area, no CRS).

    Vertices are taken to the CRS's own geographic CRS (its datum's lon/lat) and the area is
    measured on its ellipsoid (:meth:`pyproj.Geod.geometry_area_perimeter`, Karney's method):
    the same m² whatever the projection, where the planar area of EPSG:3857 is 1/cos²(lat)
    too large and that of EPSG:4326 is in degrees².
    """

    def __init__(self, crs) -> None:
        self.geographic = False
        self._geod = self._to_lonlat = None
        if crs is None:
            return
        from pyproj import Transformer

        source = _pyproj_crs(crs)
        self.geographic = source.is_geographic
        self._geod = source.get_geod()
        if not self.geographic:
            self._to_lonlat = Transformer.from_crs(source, source.geodetic_crs, always_xy=True)

    def __call__(self, polygon) -> float | None:
        """Area in m² (``None`` without a CRS)."""
        import shapely
        from shapely.geometry.polygon import orient

        if self._geod is None:
            return None
        if self._to_lonlat is not None:
            to_lonlat = self._to_lonlat

            def project(xy: np.ndarray) -> np.ndarray:
                return np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))

            polygon = shapely.transform(polygon, project)
        # Counter-clockwise shells and clockwise holes: Geod then subtracts the holes.
        area, _ = self._geod.geometry_area_perimeter(orient(polygon, 1.0))
        return abs(area)


def crs_name(crs) -> str | None:
    """``"EPSG:<code>"`` when the CRS has one, else its WKT (``None`` for no CRS)."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _layer_options(driver: str, crs) -> dict:
    if driver != "GeoJSON" or crs is None:
        return {}
    if _pyproj_crs(crs).is_geographic:
        return {"RFC7946": "YES", "COORDINATE_PRECISION": 7}
    return {"COORDINATE_PRECISION": 3}


def _write(tmp: Path, driver: str, geometries, fields: dict, crs, layer: str) -> None:
    # pyogrio brings its own GDAL (~0.2 s to load): imported only when a layer is written.
    from pyogrio.raw import write
    from shapely import to_wkb

    names = list(fields)
    columns = [np.asarray(fields[name]) for name in names]
    columns = [c.astype(object) if c.dtype.kind in "OU" else c for c in columns]
    write(
        tmp,
        np.asarray(to_wkb(list(geometries)), dtype=object).reshape(-1),
        columns,
        names,
        layer=layer,
        driver=driver,
        geometry_type="Polygon",
        promote_to_multi=False,
        crs=crs_name(crs),
        layer_options=_layer_options(driver, crs),
    )


def write_layer(
    path: str | Path,
    geometries: Sequence,
    fields: dict[str, Sequence],
    crs,
    overwrite: bool = False,
    tmp: Path | None = None,
) -> Path:
    """Write polygons and their fields to the format ``path``'s extension names, atomically.

    Args:
        path: ``.gpkg``, ``.shp``, ``.geojson``/``.json`` or ``.fgb``.
        geometries: shapely (Multi)Polygons, in ``crs``.
        fields: one sequence per field, each as long as ``geometries``.
        crs: rasterio CRS, or ``None`` (pixel coordinates).
        overwrite: replace an existing file (without it, one that appeared meanwhile is refused).
        tmp: the temporary file to write first (default: :func:`~rrsis.data.files.temp_path`).

    A Shapefile's parts are written in a temporary folder beside it and each is published in
    turn (all of them, or none when one is refused).
    """
    path = Path(path)
    driver = vector_driver(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if driver != "ESRI Shapefile":
        tmp = tmp or temp_path(path)
        try:
            _write(tmp, driver, geometries, fields, crs, path.stem)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        publish(tmp, path, overwrite)
        return path
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        _write(folder / path.name, driver, geometries, fields, crs, path.stem)
        parts = [folder / path.with_suffix(s).name for s in SHAPEFILE_PARTS]
        if not overwrite:
            for part in parts:
                if part.exists() and path.with_suffix(part.suffix).exists():
                    raise OutputExistsError(f"{path.with_suffix(part.suffix)}: output exists")
        with outputs_of_run():
            for part in parts:
                if part.exists():
                    publish(part, path.with_suffix(part.suffix), overwrite)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path
