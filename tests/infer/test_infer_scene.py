"""predict_scene: georeferencing kept, tiled output equals references, blending, vectors, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio import features
from shapely.geometry import shape

from rrsis.data.io import stretch_to_uint8
from rrsis.errors import ImageReadError, OutputExistsError, RRSISError
from rrsis.infer.compose import scene_position
from rrsis.infer.predictor import Segmenter
from rrsis.infer.scene import SceneConfig, predict_scene
from rrsis.infer.tiling import ramp_weights, tile_starts

H, W = 700, 600


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.crs, ds.transform, ds.descriptions


def _scene_rgb(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read([1, 2, 3]), 0, -1)


def test_crs_transform_kept_and_equal_to_whole_image(tmp_path, geotiff, pixel_model):
    src = geotiff(tmp_path / "scene.tif", H, W)
    dst = tmp_path / "out" / "mask.tif"
    seg = Segmenter(pixel_model)
    # tile == model input: no resize, so each pixel sees exactly what a whole-image run sees.
    predict_scene(
        src,
        ["zebra", "apple"],
        dst,
        seg,
        SceneConfig(tile=64, overlap=16, progress=False, probabilities=True),
    )
    probs, crs, transform, names = _read(dst)
    with rasterio.open(src) as ds:
        assert crs == ds.crs and crs.to_epsg() == 32640
        assert transform == ds.transform
    assert probs.shape == (2, H, W) and probs.dtype == np.float32 and names == ("zebra", "apple")
    image = _scene_rgb(src)
    x = (image.astype(np.float32) / 255.0 - 0.5) / 0.5
    for band, k in ((0, (122 - 96) / 4), (1, (97 - 96) / 4)):
        expected = 1 / (1 + np.exp(-k * (x[..., 0] - x[..., 1])))
        np.testing.assert_allclose(probs[band], expected, atol=1e-5)


def test_equals_in_memory_sliding_reference_with_resize(tmp_path, geotiff, pixel_model):
    src = geotiff(tmp_path / "scene.tif", H, W, seed=3)
    dst = tmp_path / "mask.tif"
    seg = Segmenter(pixel_model)
    tile, overlap = 100, 30  # tiles resized 100 -> 64 and back: real seams to blend
    predict_scene(
        src,
        "zebra",
        dst,
        seg,
        SceneConfig(tile=tile, overlap=overlap, batch=3, progress=False, probabilities=True),
    )
    got = _read(dst)[0][0]
    # Reference: whole scene in memory, all windows accumulated at once.
    image = _scene_rgb(src)
    acc = np.zeros((H, W), np.float64)
    wsum = np.zeros((H, W), np.float64)
    weight = ramp_weights(tile, overlap)[:, None] * ramp_weights(tile, overlap)[None, :]
    word_ids, word_mask = seg.tokenize(["zebra"])
    for y in tile_starts(H, tile, tile - overlap):
        for x in tile_starts(W, tile, tile - overlap):
            p = seg.predict_tiles(image[None, y : y + tile, x : x + tile], word_ids, word_mask)
            acc[y : y + tile, x : x + tile] += p[0, 0] * weight
            wsum[y : y + tile, x : x + tile] += weight
    assert wsum.min() > 0  # every pixel covered
    np.testing.assert_allclose(got, acc / wsum, atol=1e-5)


def test_constant_model_gives_constant_scene(tmp_path, geotiff, const_model):
    src = geotiff(tmp_path / "scene.tif", H, W)
    dst = tmp_path / "mask.tif"
    predict_scene(
        src,
        "road",
        dst,
        Segmenter(const_model),
        SceneConfig(tile=96, overlap=40, progress=False, probabilities=True),
    )
    probs = _read(dst)[0][0]
    expected = 1 / (1 + np.exp(-0.7))
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_uint8_mask_and_geojson_line_up(tmp_path, geotiff, pixel_model):
    src = geotiff(tmp_path / "scene.tif", H, W, seed=1)
    dst, vec = tmp_path / "mask.tif", tmp_path / "mask.geojson"
    predict_scene(
        src,
        ["zebra", "road"],
        dst,
        Segmenter(pixel_model),
        SceneConfig(tile=128, overlap=32, vector=vec, progress=False),
    )
    masks, crs, transform, _ = _read(dst)
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 255}
    assert 0.05 < (masks[0] > 0).mean() < 0.95  # a real mask, not all/nothing
    collection = json.loads(vec.read_text())
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32640"
    for band, name in enumerate(["zebra", "road"]):
        geoms = [
            shape(f["geometry"])
            for f in collection["features"]
            if f["properties"]["expression"] == name
        ]
        assert all(g.is_valid for g in geoms)
        # Coordinates are in the scene CRS (UTM metres), inside the scene footprint.
        left, top = transform.c, transform.f
        for g in geoms:
            minx, miny, maxx, maxy = g.bounds
            assert left <= minx and maxx <= left + W * 0.5 and top - H * 0.5 <= miny and maxy <= top
        burned = (
            features.rasterize(geoms, out_shape=(H, W), transform=transform) > 0
            if geoms
            else np.zeros((H, W), bool)
        )
        np.testing.assert_array_equal(burned, masks[band] > 0)
        # Objects crossing the first band edge (row 96 = tile - overlap) are single polygons,
        # and no two polygons share an edge (4-connected regions touch at corners at most).
        edge_y = top - 96 * 0.5
        assert any(g.bounds[1] < edge_y < g.bounds[3] for g in geoms)
        for i, a in enumerate(geoms):
            for b in geoms[i + 1 :]:
                assert a.intersection(b).length == 0


def test_scene_without_crs_warns_and_works(tmp_path, geotiff, pixel_model):
    src = geotiff(tmp_path / "nocrs.tif", 80, 90, crs=None)
    dst = tmp_path / "mask.tif"
    with pytest.warns(UserWarning, match="no CRS"):
        predict_scene(
            src,
            "road",
            dst,
            Segmenter(pixel_model),
            SceneConfig(tile=64, overlap=16, progress=False),
        )
    masks, crs, _, _ = _read(dst)
    assert crs is None and masks.shape == (1, 80, 90)


def test_16bit_one_and_four_band_scenes(tmp_path, geotiff, pixel_model):
    seg = Segmenter(pixel_model)
    src = geotiff(tmp_path / "s16.tif", 200, 150, dtype="uint16")
    dst = tmp_path / "m16.tif"
    predict_scene(
        src, "zebra", dst, seg, SceneConfig(tile=64, overlap=16, progress=False, probabilities=True)
    )
    with rasterio.open(src) as ds:
        rgb = stretch_to_uint8(np.moveaxis(ds.read(), 0, -1))  # the rrsis.data.io rule
    x = (rgb.astype(np.float32) / 255.0 - 0.5) / 0.5
    expected = 1 / (1 + np.exp(-(122 - 96) / 4 * (x[..., 0] - x[..., 1])))
    # float32 vs float64 stretch may round a few values one grey level apart.
    diff = np.abs(_read(dst)[0][0] - expected)
    assert diff.max() < 0.1 and (diff > 1e-5).mean() < 0.01
    for bands in (1, 4):
        src = geotiff(tmp_path / f"b{bands}.tif", 100, 100, bands=bands)
        dst = tmp_path / f"m{bands}.tif"
        predict_scene(src, "road", dst, seg, SceneConfig(tile=64, overlap=16, progress=False))
        assert _read(dst)[0].shape == (1, 100, 100)
    src = geotiff(tmp_path / "b2.tif", 100, 100, bands=2)
    with pytest.raises(ImageReadError, match="band count"):
        predict_scene(
            src, "road", tmp_path / "m2.tif", seg, SceneConfig(tile=64, overlap=16, progress=False)
        )
    assert not (tmp_path / "m2.tif").exists()


def test_existing_output_refused_unless_overwrite(tmp_path, geotiff, pixel_model):
    src = geotiff(tmp_path / "scene.tif", 64, 64)
    dst = tmp_path / "mask.tif"
    dst.write_bytes(b"keep me")
    seg = Segmenter(pixel_model)
    with pytest.raises(OutputExistsError):
        predict_scene(src, "road", dst, seg, SceneConfig(tile=64, overlap=16, progress=False))
    assert dst.read_bytes() == b"keep me"
    with pytest.raises(OutputExistsError):
        predict_scene(
            src, "road", src, seg, SceneConfig(tile=64, overlap=16, progress=False, overwrite=True)
        )
    predict_scene(
        src, "road", dst, seg, SceneConfig(tile=64, overlap=16, progress=False, overwrite=True)
    )
    assert _read(dst)[0].shape == (1, 64, 64)


def test_failure_leaves_no_partial_file(tmp_path, geotiff, pixel_model, monkeypatch):
    src = geotiff(tmp_path / "scene.tif", 300, 300)
    out_dir = tmp_path / "out"
    seg = Segmenter(pixel_model)
    real = seg.predict_tiles
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(seg, "predict_tiles", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        predict_scene(
            src,
            "road",
            out_dir / "mask.tif",
            seg,
            SceneConfig(
                tile=64, overlap=16, batch=1, vector=out_dir / "mask.geojson", progress=False
            ),
        )
    assert calls["n"] == 4
    assert list(out_dir.iterdir()) == []


def test_tile_grid_covers_and_ends_at_border():
    assert tile_starts(700, 128, 96) == [0, 96, 192, 288, 384, 480, 572]
    assert tile_starts(50, 128, 96) == [0]
    w = ramp_weights(64, 16)
    assert w.min() > 0 and w.max() == 1.0 and np.allclose(w, w[::-1])


def test_write_geojson_in_pixel_coordinates(tmp_path):
    from rrsis.infer.outputs import overlay_image
    from rrsis.infer.vector import write_geojson

    mask = np.zeros((40, 50), bool)
    mask[2:6, 3:13] = True  # 4 x 10 = 40 px
    mask[20:30, 20:25] = True  # 10 x 5 = 50 px
    path = write_geojson(tmp_path / "m.geojson", mask, ["road"])
    collection = json.loads(path.read_text())
    assert "crs" not in collection  # no CRS given: pixel coordinates, no crs member
    areas = sorted(shape(f["geometry"]).area for f in collection["features"])
    assert areas == [40.0, 50.0]
    with pytest.raises(OutputExistsError):
        write_geojson(path, mask, ["road"])
    image = np.full((40, 50, 3), 100, np.uint8)
    blended = overlay_image(image, mask)
    assert (blended[~mask] == 100).all()
    assert (blended[mask][:, 0] > 100).all() and (blended[mask][:, 1] < 100).all()


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("building in the upper left", ("building", "upper left")),
        ("vegetation in the top right corner", ("vegetation", "upper right")),
        ("water at the bottom of the scene", ("water", "bottom")),
        ("road in the centre", ("road", "center")),
        ("vehicle in the parking area on the left", ("vehicle in the parking area", "left")),
        # Not a scene position: a relation to another object, or nothing left once removed.
        ("the building on the left of the road", ("the building on the left of the road", None)),
        ("the left", ("the left", None)),
        ("road along the river", ("road along the river", None)),
    ],
)
def test_scene_position_parsing(expression, expected):
    assert scene_position(expression) == expected


def test_positions_refer_to_the_scene(tmp_path, geotiff, pixel_model, monkeypatch):
    src = geotiff(tmp_path / "scene.tif", H, W, seed=5)
    seg = Segmenter(pixel_model)
    fed = []
    tokenize = seg.tokenize
    monkeypatch.setattr(
        seg,
        "tokenize",
        lambda texts, checked=False: (fed.append(list(texts)), tokenize(texts, checked))[1],
    )
    names = ["zebra", "zebra in the upper left", "zebra on the right"]
    kwargs = {"tile": 64, "overlap": 16, "progress": False, "probabilities": True}
    predict_scene(src, names, tmp_path / "scene.tif.out.tif", seg, SceneConfig(**kwargs))
    probs = _read(tmp_path / "scene.tif.out.tif")[0]
    # The model saw the expressions without their position phrases.
    assert fed == [["zebra", "zebra", "zebra"]]
    assert (probs[0] > 0).all()
    upper_left = np.zeros((H, W), bool)
    upper_left[: H // 2, : W // 2] = True
    np.testing.assert_array_equal(probs[1], np.where(upper_left, probs[0], 0))
    right = np.zeros((H, W), bool)
    right[:, round(W * 2 / 3) :] = True
    np.testing.assert_array_equal(probs[2], np.where(right, probs[0], 0))
    # Window mode without the rules: the model reads the whole expression in every window (here:
    # the same pixels). With them, each window applies the position rule to its own objects
    # (tests/infer/test_compose.py).
    fed.clear()
    kwargs["compose"] = "none"
    predict_scene(
        src, names, tmp_path / "window.tif", seg, SceneConfig(positions="window", **kwargs)
    )
    assert fed == [names]
    window = _read(tmp_path / "window.tif")[0]
    np.testing.assert_array_equal(window[1], window[0])


def test_unrecognised_position_words_warn(tmp_path, geotiff, pixel_model):
    src = geotiff(tmp_path / "scene.tif", 96, 96)
    with pytest.warns(UserWarning, match="no scene region recognised"):
        predict_scene(
            src,
            "zebra in the north",
            tmp_path / "o.tif",
            Segmenter(pixel_model),
            SceneConfig(tile=64, overlap=16, progress=False),
        )
    with pytest.raises(RRSISError, match="at least one expression"):
        predict_scene(src, [], tmp_path / "q.tif", Segmenter(pixel_model))
    with pytest.raises(RRSISError, match="positions must be"):
        SceneConfig(positions="map")


def test_nodata_is_skipped_masked_and_kept(tmp_path, geotiff, const_model, monkeypatch):
    from rrsis.infer.raster import Stretch, has_nodata

    height, width, collar = 300, 400, 150
    plain = geotiff(tmp_path / "plain.tif", height, width, dtype="uint16", seed=2)
    with rasterio.open(plain) as ds:
        data, profile = ds.read(), ds.profile
    data[:, :, :collar] = 0  # a nodata collar, as at the edge of a satellite scene's footprint
    src = tmp_path / "collar.tif"
    with rasterio.open(src, "w", **(profile | {"nodata": 0})) as dst:
        dst.write(data)
    with rasterio.open(plain) as ds:
        assert not has_nodata(ds)
    with rasterio.open(src) as ds:
        assert has_nodata(ds)
        # The 16-bit stretch is estimated on valid pixels: the zeros would set the 2nd percentile.
        assert (Stretch(ds, src, masked=False).low == 0).all()
        assert (Stretch(ds, src, masked=True).low >= 100).all()
    seg = Segmenter(const_model, threshold=0.5)  # foreground everywhere it is asked
    seen = []
    predict_tiles = seg.predict_tiles
    monkeypatch.setattr(
        seg,
        "predict_tiles",
        lambda tiles, *a: (seen.append(len(tiles)), predict_tiles(tiles, *a))[1],
    )
    dst = tmp_path / "mask.tif"
    predict_scene(
        src,
        "building",
        dst,
        seg,
        SceneConfig(tile=64, overlap=16, batch=3, progress=False, vector=tmp_path / "mask.geojson"),
    )
    with rasterio.open(dst) as out:
        mask, valid = out.read(1), out.dataset_mask()
        assert out.crs == profile["crs"] and out.transform == profile["transform"]
    assert (mask[:, :collar] == 0).all() and (mask[:, collar:] == 255).all()
    assert (valid[:, :collar] == 0).all() and (valid[:, collar:] == 255).all()
    # The windows are those of the valid part cut out: none reads the collar.
    n_rows = len(tile_starts(height, 64, 48))
    assert sum(seen) == n_rows * len(tile_starts(width - collar, 64, 48))
    polygons = json.loads((tmp_path / "mask.geojson").read_text())["features"]
    x_min = min(shape(f["geometry"]).bounds[0] for f in polygons)
    assert x_min == pytest.approx(profile["transform"].c + collar * 0.5)


def test_plain_image_as_a_scene_warns_once(tmp_path, pixel_model):
    import warnings

    from PIL import Image

    rng = np.random.default_rng(0)
    src = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (90, 100, 3), dtype=np.uint8)).save(src)
    dst = tmp_path / "mask.tif"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict_scene(
            src,
            "road",
            dst,
            Segmenter(pixel_model),
            SceneConfig(tile=64, overlap=16, progress=False),
        )
    assert [str(w.message) for w in caught] == [
        f"{src} has no CRS; the output keeps its pixel grid without one"
    ]
    with rasterio.open(dst) as out:
        assert out.crs is None and out.shape == (90, 100)


def test_bands_pick_rgb_from_a_multispectral_scene(tmp_path, geotiff, pixel_model):
    stack = geotiff(tmp_path / "stack.tif", 120, 100, bands=5, dtype="uint16", seed=4)
    with rasterio.open(stack) as ds:
        data, profile = ds.read(), ds.profile
    rgb = tmp_path / "rgb.tif"  # bands 4, 2, 1 of the stack, as a plain RGB scene
    with rasterio.open(rgb, "w", **(profile | {"count": 3})) as dst:
        dst.write(data[[3, 1, 0]])
    seg = Segmenter(pixel_model)
    kwargs = {"tile": 64, "overlap": 16, "progress": False, "probabilities": True}
    predict_scene(stack, "zebra", tmp_path / "a.tif", seg, SceneConfig(bands=(4, 2, 1), **kwargs))
    predict_scene(rgb, "zebra", tmp_path / "b.tif", seg, SceneConfig(**kwargs))
    np.testing.assert_array_equal(_read(tmp_path / "a.tif")[0], _read(tmp_path / "b.tif")[0])
    with pytest.raises(ImageReadError, match="unsupported band count 5.*--bands"):
        predict_scene(stack, "zebra", tmp_path / "c.tif", seg, SceneConfig(**kwargs))
    with pytest.raises(ImageReadError, match="bands 6,2,1 do not fit this 5-band image"):
        predict_scene(
            stack, "zebra", tmp_path / "c.tif", seg, SceneConfig(bands=(6, 2, 1), **kwargs)
        )
    assert not (tmp_path / "c.tif").exists()


def test_bands_option_on_the_command_line(tmp_path, geotiff, capsys):
    from rrsis.cli import main

    stack = geotiff(tmp_path / "stack.tif", 80, 80, bands=5, dtype="uint16")
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage line + message, exit 2
        main(["predict-scene", str(stack), "road", "-o", str(tmp_path / "m.tif"), "--bands", "4,x"])
    assert exit_info.value.code == 2 and "R,G,B" in capsys.readouterr().err


def test_overviews_are_added_on_request(tmp_path, geotiff, pixel_model):
    src = geotiff(tmp_path / "scene.tif", 1100, 600)
    seg = Segmenter(pixel_model)
    kwargs = {"tile": 128, "overlap": 32, "progress": False}
    predict_scene(
        src, ["zebra", "apple"], tmp_path / "a.tif", seg, SceneConfig(overviews=True, **kwargs)
    )
    predict_scene(src, ["zebra", "apple"], tmp_path / "b.tif", seg, SceneConfig(**kwargs))
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert a.overviews(1) == a.overviews(2) == [2]  # 600 / 2 >= 256, 600 / 4 < 256
        assert b.overviews(1) == []
        np.testing.assert_array_equal(a.read(), b.read())  # the full-resolution bands unchanged
        small = a.read(1, out_shape=(550, 300))  # read from the 2x overview
        assert set(np.unique(small)) <= {0, 255}  # nearest: still a 0/255 mask


def test_float_scene_with_untagged_nan_is_stretched_on_finite_values(tmp_path, pixel_model):
    from rrsis.infer.raster import Stretch

    rng = np.random.default_rng(0)
    data = rng.random((3, 80, 90)).astype(np.float32) * 1000 + 50
    data[:, :, :20] = np.nan  # e.g. a reprojected scene's empty corner, without a nodata tag
    src = tmp_path / "float.tif"
    profile = {"driver": "GTiff", "height": 80, "width": 90, "count": 3, "dtype": "float32"}
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(src) as ds:
        stretch = Stretch(ds, src)
        rgb = stretch(ds.read([1, 2, 3]))
    assert np.isfinite(stretch.low).all() and (stretch.low >= 50).all()
    assert (rgb[:, :20] == 0).all() and rgb[:, 20:].std() > 20  # NaN -> 0, the rest stretched
    predict_scene(
        src,
        "zebra",
        tmp_path / "m.tif",
        Segmenter(pixel_model),
        SceneConfig(tile=64, overlap=16, progress=False),
    )


def test_untagged_nan_in_a_float_scene_is_nodata(tmp_path, geotiff, pixel_model, monkeypatch):
    """A NaN collar without a nodata tag gives what the same collar tagged as nodata gives."""
    from rrsis.infer import raster

    height, width, collar = 200, 300, 110
    plain = geotiff(tmp_path / "plain.tif", height, width, dtype="uint16", seed=5)
    with rasterio.open(plain) as ds:
        data, profile = ds.read().astype(np.float32), ds.profile | {"dtype": "float32"}
    data[:, :, :collar] = np.nan
    data[1, 150, 200] = np.inf  # one stray pixel: invalid in one band is invalid
    untagged = tmp_path / "nan.tif"
    with rasterio.open(untagged, "w", **profile) as dst:
        dst.write(data)
    tagged = tmp_path / "tagged.tif"
    filled = np.where(np.isfinite(data).all(axis=0), data, -9999.0).astype(np.float32)
    with rasterio.open(tagged, "w", **(profile | {"nodata": -9999.0})) as dst:
        dst.write(filled)
    monkeypatch.setattr(raster.Validity, "chunk", 64)  # several column chunks per row
    seg = Segmenter(pixel_model)
    kwargs = {"tile": 64, "overlap": 16, "progress": False, "probabilities": True}
    predict_scene(tagged, "zebra", tmp_path / "a.tif", seg, SceneConfig(**kwargs))
    calls = pixel_model.calls
    predict_scene(untagged, "zebra", tmp_path / "b.tif", seg, SceneConfig(**kwargs))
    assert pixel_model.calls - calls == calls  # the same windows skipped
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        valid = b.dataset_mask()
        np.testing.assert_array_equal(a.dataset_mask(), valid)
    assert (valid[:, :collar] == 0).all() and valid[150, 200] == 0
    assert valid[:, collar:].sum() == 255 * (height * (width - collar) - 1)
    assert (_read(tmp_path / "b.tif")[0][0][:, :collar] == 0).all()


def test_cloud_optimized_output(tmp_path, geotiff, pixel_model):
    src = geotiff(tmp_path / "scene.tif", 700, 600)
    with rasterio.open(src) as ds:  # with a nodata corner, so the mask band must survive
        data, profile = ds.read(), ds.profile
    data[:, :100, :100] = 0
    with rasterio.open(src, "w", **(profile | {"nodata": 0})) as dst:
        dst.write(data)
    seg = Segmenter(pixel_model)
    kwargs = {"tile": 128, "overlap": 32, "progress": False}
    predict_scene(src, ["zebra", "apple"], tmp_path / "plain.tif", seg, SceneConfig(**kwargs))
    predict_scene(
        src, ["zebra", "apple"], tmp_path / "cog.tif", seg, SceneConfig(cog=True, **kwargs)
    )
    with rasterio.open(tmp_path / "plain.tif") as a, rasterio.open(tmp_path / "cog.tif") as b:
        assert b.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert a.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG"
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.dataset_mask(), b.dataset_mask())
        assert (b.dataset_mask()[:100, :100] == 0).all()
        assert b.crs == a.crs and b.transform == a.transform
        assert b.descriptions == ("zebra", "apple")
        assert b.overviews(1)[:1] == [2] and b.block_shapes[0] == (256, 256)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cog.tif", "plain.tif", "scene.tif"]


def test_min_area_is_measured_on_whole_objects_in_crs_units(tmp_path):
    from rasterio.transform import from_origin

    from rrsis.infer.vector import BandVectorizer

    mask = np.zeros((1, 40, 40), bool)
    mask[0, 2:4, 2:4] = True  # 4 px = 1 m² at 0.5 m: dropped
    mask[0, 10:30, 5:8] = True  # 60 px = 15 m², cut in three by the row bands below: kept
    mask[0, 5:8, 30:38] = True  # 24 px = 6 m², inside one band: kept
    transform = from_origin(500000.0, 2700000.0, 0.5, 0.5)
    path = tmp_path / "m.geojson"
    crs = rasterio.crs.CRS.from_epsg(32640)
    writer = BandVectorizer(path, crs, transform, 40, ["road"], min_area=5.0)
    for top in (0, 15, 25):
        writer.add_rows(mask[:, top : top + {0: 15, 15: 10, 25: 15}[top]], top)
    writer.close()
    features = json.loads(path.read_text())["features"]
    assert sorted(f["properties"]["area"] for f in features) == [6.0, 15.0]
    assert writer.dropped == 1
    # Its parts (rows 10-15, 15-25, 25-30: 3.75, 7.5, 3.75 m²) are each under 10 m², the whole
    # object is not: the area is measured after the parts are merged.
    writer = BandVectorizer(path, crs, transform, 40, ["road"], min_area=10.0, overwrite=True)
    for top in (0, 15, 25):
        writer.add_rows(mask[:, top : top + {0: 15, 15: 10, 25: 15}[top]], top)
    writer.close()
    assert [f["properties"]["area"] for f in json.loads(path.read_text())["features"]] == [15.0]
    with pytest.raises(ValueError, match="min_area"):
        BandVectorizer(tmp_path / "x.geojson", None, transform, 40, ["road"], min_area=-1)


def test_a_vrt_mosaic_of_tiles_is_one_scene(tmp_path, geotiff, pixel_model):
    """Tiles stitched by a GDAL VRT (what gdalbuildvrt writes) segment as the mosaic they form."""
    from rasterio.transform import from_origin

    whole = geotiff(tmp_path / "whole.tif", 160, 300, seed=6)
    with rasterio.open(whole) as ds:
        data, profile = ds.read(), ds.profile
    halves = []
    for k, (c0, c1) in enumerate(((0, 140), (140, 300))):  # west and east tiles
        path = tmp_path / f"part{k}.tif"
        transform = from_origin(400000.0 + c0 * 0.5, 2700000.0, 0.5, 0.5)
        with rasterio.open(
            path, "w", **(profile | {"width": c1 - c0, "transform": transform})
        ) as dst:
            dst.write(data[:, :, c0:c1])
        halves.append((path, c0, c1 - c0))
    bands = []
    for band in (1, 2, 3):
        sources = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT='1'>{p.name}</SourceFilename>"
            f"<SourceBand>{band}</SourceBand>"
            f"<SrcRect xOff='0' yOff='0' xSize='{w}' ySize='160'/>"
            f"<DstRect xOff='{c0}' yOff='0' xSize='{w}' ySize='160'/></SimpleSource>"
            for p, c0, w in halves
        )
        bands.append(f"<VRTRasterBand dataType='Byte' band='{band}'>{sources}</VRTRasterBand>")
    with rasterio.open(whole) as ds:
        srs, gt = ds.crs.to_wkt(), ds.transform.to_gdal()
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(
        f"<VRTDataset rasterXSize='300' rasterYSize='160'><SRS>{srs}</SRS>"
        f"<GeoTransform>{', '.join(map(str, gt))}</GeoTransform>{''.join(bands)}</VRTDataset>"
    )
    seg = Segmenter(pixel_model)
    kwargs = {"tile": 64, "overlap": 16, "progress": False, "probabilities": True}
    predict_scene(whole, "zebra", tmp_path / "a.tif", seg, SceneConfig(**kwargs))
    predict_scene(vrt, "zebra", tmp_path / "b.tif", seg, SceneConfig(**kwargs))
    a, b = _read(tmp_path / "a.tif"), _read(tmp_path / "b.tif")
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and a[2] == b[2]


def test_polygons_reprojected_to_lon_lat_keep_their_metric_areas(tmp_path):
    from rasterio.transform import from_origin

    from rrsis.errors import RRSISError
    from rrsis.infer.vector import BandVectorizer

    mask = np.zeros((1, 40, 40), bool)
    mask[0, 10:30, 5:8] = True  # 60 px = 15 m² at 0.5 m
    transform = from_origin(400000.0, 2700000.0, 0.5, 0.5)
    utm = rasterio.crs.CRS.from_epsg(32640)
    for name, dst in (("utm", None), ("wgs84", "EPSG:4326")):
        writer = BandVectorizer(
            tmp_path / f"{name}.geojson", utm, transform, 40, ["road"], dst_crs=dst
        )
        writer.add_rows(mask, 0)
        writer.close()
    utm_doc = json.loads((tmp_path / "utm.geojson").read_text())
    wgs_doc = json.loads((tmp_path / "wgs84.geojson").read_text())
    assert "crs" not in wgs_doc  # RFC 7946
    assert utm_doc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32640"
    (feature,) = wgs_doc["features"]
    assert feature["properties"]["area"] == utm_doc["features"][0]["properties"]["area"] == 15.0
    for lon, lat in feature["geometry"]["coordinates"][0]:  # UTM 40N near 56 E, 24.4 N
        assert 56.0 < lon < 56.02 and 24.40 < lat < 24.42
    with pytest.raises(RRSISError, match="no CRS"):
        BandVectorizer(tmp_path / "x.geojson", None, transform, 40, ["road"], dst_crs="EPSG:4326")
    with pytest.raises(RRSISError, match="unknown CRS"):
        BandVectorizer(tmp_path / "y.geojson", utm, transform, 40, ["road"], dst_crs="EPSG:nope")


def test_predict_scene_writes_lon_lat_polygons_on_request(tmp_path, geotiff, pixel_model):
    src = geotiff(tmp_path / "scene.tif", 150, 200)
    kwargs = {"tile": 64, "overlap": 16, "progress": False}
    seg = Segmenter(pixel_model)
    predict_scene(
        src, "zebra", tmp_path / "a.tif", seg, SceneConfig(vector=tmp_path / "a.geojson", **kwargs)
    )
    predict_scene(
        src,
        "zebra",
        tmp_path / "b.tif",
        seg,
        SceneConfig(vector=tmp_path / "b.geojson", vector_crs="EPSG:4326", **kwargs),
    )
    utm = json.loads((tmp_path / "a.geojson").read_text())["features"]
    lonlat = json.loads((tmp_path / "b.geojson").read_text())["features"]
    assert len(utm) == len(lonlat) > 0
    assert [f["properties"] for f in utm] == [f["properties"] for f in lonlat]
    lon, lat = lonlat[0]["geometry"]["coordinates"][0][0]
    assert 55.9 < lon < 56.1 and 24.3 < lat < 24.5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tile": 16}, "need tile >= 32"),
        ({"tile": 64, "overlap": 64}, "0 <= overlap < tile"),
        ({"batch": 0}, "batch must be at least 1"),
        ({"min_area": -1.0}, "min_area must be >= 0"),
        ({"simplify": -0.5}, "simplify must be >= 0"),
        ({"compose": "colour"}, "unknown composition rule"),
        ({"positions": "map"}, "positions must be"),
    ],
)
def test_scene_config_checks_its_values(options, message):
    with pytest.raises(RRSISError, match=message):
        SceneConfig(**options)
    assert SceneConfig(vector="a.geojson").vector.suffix == ".geojson"  # a Path


def test_scene_rules_say_what_may_decide_each_band(pixel_model):
    from rrsis.infer.scene import scene_rules

    seg = Segmenter(pixel_model)
    names = ["zebra", "zebra in the upper left", "zebra along the road in the upper left"]
    assert scene_rules(names, seg) == [(None, None), ("position", None), ("position", "relation")]
    window = SceneConfig(positions="window")
    assert scene_rules("zebra in the upper left", seg, window) == [(None, "position")]
    alone = SceneConfig(compose="none")
    assert scene_rules(names, seg, alone) == [(None, None), ("position", None), ("position", None)]
