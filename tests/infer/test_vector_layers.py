"""Polygon files: the format the extension names, geodesic areas, default speckle filter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from shapely.geometry import box

from rrsis.cli import main
from rrsis.errors import RRSISError
from rrsis.infer.layers import MIN_AREA, AreaMeter, vector_driver
from rrsis.infer.vector import BandVectorizer, write_geojson


def _blobs() -> np.ndarray:
    mask = np.zeros((40, 40), bool)
    mask[2:4, 2:4] = True  # 4 px
    mask[10:30, 5:8] = True  # 60 px
    return mask


@pytest.mark.parametrize(
    ("name", "driver"),
    [
        ("m.gpkg", "GPKG"),
        ("m.shp", "ESRI Shapefile"),
        ("m.fgb", "FlatGeobuf"),
        ("m.json", "GeoJSON"),
    ],
)
def test_the_extension_names_the_format(tmp_path, name, driver):
    import pyogrio

    transform = from_origin(500000.0, 2700000.0, 0.5, 0.5)
    crs = rasterio.crs.CRS.from_epsg(32640)
    path = write_geojson(tmp_path / name, _blobs(), ["road"], transform, crs)
    info = pyogrio.read_info(path)
    assert info["driver"] == driver and info["features"] == 2
    assert pyogrio.read_info(path)["crs"] == "EPSG:32640"
    assert {"expression", "band", "area_m2"} <= set(info["fields"])
    if driver == "GPKG":
        assert path.read_bytes()[:15] == b"SQLite format 3"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporaries (a Shapefile's folder) are gone


def test_unknown_vector_extension_is_refused_before_any_work(tmp_path, geotiff, capsys):
    src = geotiff(tmp_path / "in.tif", 64, 64)
    with pytest.raises(RRSISError, match=r"unknown vector format '\.kml'"):
        vector_driver(tmp_path / "x.kml")
    argv = ["predict", str(src), "road", "-o", str(tmp_path / "m.tif")]
    # No --model: a refusal after the model load would say the weights are missing instead.
    assert main([*argv, "--model", str(tmp_path / "none.safetensors"), "--vector", "p.kml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown vector format '.kml'" in err[0]
    assert not (tmp_path / "m.tif").exists() and not (tmp_path / "p.kml").exists()


def test_lon_lat_geojson_is_rfc7946(tmp_path):
    transform = from_origin(400000.0, 2700000.0, 0.5, 0.5)
    utm = rasterio.crs.CRS.from_epsg(32640)
    writer = BandVectorizer(
        tmp_path / "w.geojson", utm, transform, 40, ["road"], dst_crs="EPSG:4326"
    )
    writer.add_rows(_blobs()[None], 0)
    writer.close()
    doc = json.loads((tmp_path / "w.geojson").read_text())
    assert "crs" not in doc
    for lon, lat in doc["features"][0]["geometry"]["coordinates"][0]:
        assert 56.0 < lon < 56.02 and 24.40 < lat < 24.42
        assert len(repr(lon).split(".")[1]) <= 7 and len(repr(lat).split(".")[1]) <= 7


def test_areas_are_square_metres_whatever_the_crs():
    """A 20 m x 20 m square in Dubai (UTM 40N), the same ground in EPSG:3857 and EPSG:4326."""
    square = box(330000.0, 2788000.0, 330020.0, 2788020.0)  # about 55.3 E, 25.2 N
    areas = {}
    for code in (32640, 3857, 4326):
        to = Transformer.from_crs("EPSG:32640", f"EPSG:{code}", always_xy=True)
        from shapely import transform as apply

        shape = apply(square, lambda xy, to=to: np.column_stack(to.transform(xy[:, 0], xy[:, 1])))
        areas[code] = (AreaMeter(rasterio.crs.CRS.from_epsg(code))(shape), shape.area)
    assert areas[32640][1] == 400.0
    for code in (32640, 3857, 4326):
        assert areas[code][0] == pytest.approx(400.0, rel=2e-3)  # UTM's scale is 0.9996-1.0004
    assert areas[3857][1] > 1.2 * 400  # the planar area the issue reported, for contrast
    assert AreaMeter(None)(square) is None


def test_min_area_is_in_square_metres_for_a_lon_lat_raster(tmp_path):
    deg = 0.5 / 111_000  # about 0.5 m a pixel
    transform = from_origin(55.3, 25.2, deg, deg)
    wgs84 = rasterio.crs.CRS.from_epsg(4326)
    writer = BandVectorizer(tmp_path / "a.geojson", wgs84, transform, 40, ["road"], min_area=5.0)
    writer.add_rows(_blobs()[None], 0)  # 4 px ~ 1 m² dropped; 60 px ~ 14 m² kept
    writer.close()
    (feature,) = json.loads((tmp_path / "a.geojson").read_text())["features"]
    assert 12.0 < feature["properties"]["area_m2"] < 16.0
    assert writer.dropped == 1


def _speckled(path, geotiff, x0=400000.0):
    geotiff(path, 64, 64)
    with rasterio.open(path, "r+") as ds:  # red single pixels (0.25 m² each) and one block
        data = np.zeros((3, 64, 64), np.uint8)
        data[0, 40::4, ::4] = 255
        data[0, 10:30, 5:15] = 255  # 200 px = 50 m²
        ds.write(data)
        ds.transform = from_origin(x0, 2700000.0, 0.5, 0.5)
    return path


def test_speckle_is_left_out_by_default_masks_unchanged(tmp_path, geotiff, pixel_model):
    from rrsis.infer.batch import BatchConfig, predict_images
    from rrsis.infer.predictor import Segmenter

    src = _speckled(tmp_path / "in.tif", geotiff)
    seg = Segmenter(pixel_model, compose="none")
    assert BatchConfig().min_area == MIN_AREA == 10.0
    kwargs = {"vector": True, "progress": False}
    predict_images([src], "red", tmp_path / "d", seg, BatchConfig(**kwargs))
    predict_images([src], "red", tmp_path / "all", seg, BatchConfig(min_area=0, **kwargs))
    kept = json.loads((tmp_path / "d" / "in.geojson").read_text())["features"]
    every = json.loads((tmp_path / "all" / "in.geojson").read_text())["features"]
    assert [round(f["properties"]["area_m2"]) for f in kept] == [50]
    assert len(every) > 10 and min(f["properties"]["area_m2"] for f in every) < 0.3
    with (
        rasterio.open(tmp_path / "d" / "in.tif") as a,
        rasterio.open(tmp_path / "all" / "in.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())


def test_batch_merged_layer_and_vrt_mosaic(tmp_path, geotiff, pixel_model):
    import pyogrio.raw

    from rrsis.infer.batch import BatchConfig, predict_images
    from rrsis.infer.predictor import Segmenter

    tiles = tmp_path / "tiles"
    tiles.mkdir()
    _speckled(tiles / "a.tif", geotiff)
    _speckled(tiles / "b.tif", geotiff, x0=400032.0)  # 64 px east of a
    geotiff(tiles / "c.tif", 64, 64)  # green-free? no red-green: no polygon for "red"
    with rasterio.open(tiles / "c.tif", "r+") as ds:
        ds.write(np.zeros((3, 64, 64), np.uint8))
        ds.transform = from_origin(400000.0, 2699968.0, 0.5, 0.5)  # below a
    seg = Segmenter(pixel_model, compose="none")
    config = BatchConfig(vector=True, progress=False, merged_vector="all.gpkg", vrt="masks.vrt")
    out = tmp_path / "out"
    predict_images([tiles], ["red", "rose"], out, seg, config)
    assert not (out / "c_red.geojson").exists()  # an empty mask writes no polygon file
    assert (out / "a_red.geojson").exists()
    _, _, geometry, fields = pyogrio.raw.read(out / "all.gpkg")
    meta = pyogrio.read_info(out / "all.gpkg")
    assert meta["crs"] == "EPSG:32640" and list(meta["fields"]) == [
        "expression",
        "source",
        "area_m2",
    ]
    assert sorted(set(fields[1])) == [str(tiles / "a.tif"), str(tiles / "b.tif")]
    assert sorted(set(fields[0])) == ["red", "rose"] and len(geometry) == 4
    with rasterio.open(out / "masks.vrt") as vrt:
        assert vrt.count == 2 and vrt.descriptions == ("red", "rose") and vrt.shape == (128, 128)
        assert vrt.crs == rasterio.crs.CRS.from_epsg(32640)
        mosaic = vrt.read()
        for name, (row, col) in (("a", (0, 0)), ("b", (0, 64)), ("c", (64, 0))):
            for band, expression in enumerate(["red", "rose"]):
                with rasterio.open(out / f"{name}_{expression}.tif") as tile:
                    want = tile.read(1)
                np.testing.assert_array_equal(mosaic[band, row : row + 64, col : col + 64], want)
        assert not mosaic[:, 64:, 64:].any()  # no tile there
