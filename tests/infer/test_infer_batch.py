"""``rrsis.infer.batch``: many images in one run (``rrsis predict-batch``)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio
from PIL import Image

from rrsis.cli import main
from rrsis.errors import DatasetError, OutputExistsError, RRSISError
from rrsis.infer.batch import BatchConfig, plan_outputs, predict_images, slug
from rrsis.infer.images import to_rgb_uint8
from rrsis.infer.predictor import Segmenter


def _png(path, height=64, width=96, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _summary(out_dir) -> list[dict]:
    with open(out_dir / "summary.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        _png(images / f"tile{i}.png", seed=i)
    (images / "notes.txt").write_text("not an image")
    return images


def test_slug_and_numbered_duplicates(tmp_path):
    assert slug("Buildings along the road!") == "buildings-along-the-road"
    assert slug("%%%") == "expression"
    plans = plan_outputs([tmp_path / "a.jpg"], ["road", "Road", "water"], tmp_path / "out")
    names = [p.name for p in plans[0].masks]
    assert names == ["a_road.png", "a_road-2.png", "a_water.png"]


def test_masks_equal_single_image_predictions(folder, tmp_path, pixel_model):
    segmenter = Segmenter(pixel_model, compose="none")
    out = tmp_path / "out"
    rows = predict_images(
        [folder], ["red", "blue"], out, segmenter, BatchConfig(overlay=True, progress=False)
    )
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    for i in range(3):
        image = folder / f"tile{i}.png"
        expected = segmenter(to_rgb_uint8(image), ["red", "blue"])
        for expression, want in zip(["red", "blue"], expected):
            got = np.asarray(Image.open(out / f"tile{i}_{expression}.png")) > 0
            np.testing.assert_array_equal(got, want)
            assert (out / f"tile{i}_{expression}_overlay.png").exists()
            row = next(
                r for r in rows if r["image"] == str(image) and r["expression"] == expression
            )
            assert float(row["foreground_pct"]) == pytest.approx(want.mean() * 100, abs=1e-3)
            assert (row["width"], row["height"]) == (96, 64)
    assert [r["status"] for r in _summary(out)] == ["ok"] * 6
    # The text file in the folder is not an image and is not read.
    assert not any("notes" in r["image"] for r in rows)


def test_one_expression_keeps_the_image_name(folder, tmp_path, pixel_model):
    out = tmp_path / "out"
    predict_images(
        [folder / "tile1.png"], "red", out, Segmenter(pixel_model), BatchConfig(progress=False)
    )
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv", "tile1.png"]


def test_unreadable_image_is_recorded_and_the_run_goes_on(folder, tmp_path, pixel_model):
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    _png(folder / "tiny.png", height=16, width=16)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="skipped"):
        rows = predict_images(
            [folder], "red", out, Segmenter(pixel_model), BatchConfig(progress=False)
        )
    status = {r["image"].rsplit("/", 1)[-1]: (r["status"], r["error"]) for r in rows}
    assert status["broken.png"][0] == "error" and "decode" in status["broken.png"][1]
    assert status["tiny.png"][0] == "error" and "32 px" in status["tiny.png"][1]
    assert [status[f"tile{i}.png"][0] for i in range(3)] == ["ok"] * 3
    assert not (out / "broken.png").exists()


def test_existing_outputs_refused_before_any_work(folder, tmp_path, pixel_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tile2.png").write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="tile2.png"):
        predict_images([folder], "red", out, Segmenter(pixel_model), BatchConfig(progress=False))
    assert pixel_model.calls == 0
    assert sorted(p.name for p in out.iterdir()) == ["tile2.png"]
    assert (out / "tile2.png").read_bytes() == b"keep me"


def test_skip_existing_resumes_only_missing_images(folder, tmp_path, pixel_model):
    out = tmp_path / "out"
    segmenter = Segmenter(pixel_model, compose="none")
    predict_images(
        [folder], ["red", "blue"], out, segmenter, BatchConfig(vector=True, progress=False)
    )
    first = pixel_model.calls
    (out / "tile1_blue.png").unlink()  # as if the run had stopped inside tile1
    stale = (out / "tile0_red.png").read_bytes()
    rows = predict_images(
        [folder],
        ["red", "blue"],
        out,
        segmenter,
        BatchConfig(vector=True, skip_existing=True, progress=False),
    )
    assert pixel_model.calls - first == first // 3  # one image's forwards, not three
    status = {(r["image"].rsplit("/", 1)[-1], r["expression"]): r["status"] for r in rows}
    assert status[("tile1.png", "blue")] == "ok" and status[("tile1.png", "red")] == "ok"
    assert status[("tile0.png", "red")] == "skipped" and status[("tile2.png", "blue")] == "skipped"
    assert (out / "tile1_blue.png").exists() and (out / "tile0_red.png").read_bytes() == stale
    assert json.loads((out / "tile1_red.geojson").read_text())["type"] == "FeatureCollection"


def test_same_stem_in_two_folders_refused(tmp_path, pixel_model):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _png(tmp_path / name / "x.png")
    with pytest.raises(OutputExistsError, match="same outputs"):
        predict_images(
            [tmp_path / "a", tmp_path / "b"], "red", tmp_path / "out", Segmenter(pixel_model)
        )
    with pytest.raises(DatasetError, match="no such file"):
        predict_images([tmp_path / "nope"], "red", tmp_path / "out", Segmenter(pixel_model))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        predict_images([tmp_path / "empty"], "red", tmp_path / "out", Segmenter(pixel_model))


def test_geotiff_inputs_keep_georeferencing(tmp_path, geotiff, pixel_model):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    geotiff(scenes / "s1.tif", 80, 100)
    out = tmp_path / "out"
    predict_images(
        [scenes], "red", out, Segmenter(pixel_model), BatchConfig(vector=True, progress=False)
    )
    with rasterio.open(scenes / "s1.tif") as src, rasterio.open(out / "s1.tif") as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.width, dst.height) == (100, 80)
    features = json.loads((out / "s1.geojson").read_text())["features"]
    assert features  # polygons in UTM metres, not pixels
    x, y = features[0]["geometry"]["coordinates"][0][0]
    assert 400000 <= x <= 400050 and 2699960 <= y <= 2700000


def test_cli_exit_codes_and_summary(folder, tmp_path, capsys):
    import torch

    from rrsis.models.io import save_model
    from rrsis.models.registry import get_tiny_model

    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_model(get_tiny_model("lgce_effnet_minilm"), weights)
    out = tmp_path / "out"
    args = ["predict-batch", str(folder), "-e", "road", "-o", str(out), "--model", str(weights)]
    assert main([*args, "--no-progress"]) == 0
    assert "3 images segmented, 0 skipped" in capsys.readouterr().out
    assert main([*args, "--no-progress"]) == 2  # outputs exist
    assert "--skip-existing" in capsys.readouterr().err
    (folder / "broken.jpg").write_bytes(b"nope")
    assert main([*args, "--no-progress", "--skip-existing"]) == 1  # one unreadable image
    captured = capsys.readouterr()
    assert "0 images segmented, 3 skipped (outputs exist), 1 unreadable" in captured.out
    assert "rrsis: warning: skipped" in captured.err and "Traceback" not in captured.err
    assert main([*args, "--overwrite", "--skip-existing"]) == 2


def test_min_area_filters_the_polygons_not_the_masks(folder, tmp_path, pixel_model):
    seg = Segmenter(pixel_model, compose="none")
    kwargs = {"vector": True, "progress": False}
    config = BatchConfig(min_area=0, **kwargs)
    predict_images([folder / "tile0.png"], "red", tmp_path / "all", seg, config)
    predict_images(
        [folder / "tile0.png"], "red", tmp_path / "big", seg, BatchConfig(min_area=20, **kwargs)
    )
    every = json.loads((tmp_path / "all" / "tile0.geojson").read_text())["features"]
    big = json.loads((tmp_path / "big" / "tile0.geojson").read_text())["features"]
    areas = sorted(f["properties"]["area"] for f in every)  # pixels: a plain PNG
    assert areas[0] < 20 <= areas[-1]
    assert sorted(f["properties"]["area"] for f in big) == [a for a in areas if a >= 20]
    a = np.asarray(Image.open(tmp_path / "all" / "tile0.png"))
    np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "big" / "tile0.png")))


def test_min_area_must_be_a_number(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["predict-batch", str(tmp_path), "-e", "x", "-o", str(tmp_path), "--min-area", "-3"])
    assert "area >= 0" in capsys.readouterr().err


def test_top_level_api_names_resolve():
    import subprocess
    import sys

    import rrsis
    from rrsis.infer.scene import predict_scene

    assert rrsis.predict_images is predict_images and rrsis.predict_scene is predict_scene
    from rrsis.infer.reading import Prediction
    from rrsis.infer.scene import SceneConfig

    assert rrsis.Segmenter is Segmenter and rrsis.Prediction is Prediction
    assert rrsis.SceneConfig is SceneConfig and rrsis.BatchConfig is BatchConfig
    public = {"Segmenter", "Prediction", "predict_images", "BatchConfig", "predict_scene"}
    assert set(rrsis.__all__) >= public | {"SceneConfig"}
    with pytest.raises(AttributeError):
        rrsis.no_such_name  # noqa: B018
    # `import rrsis` alone stays light: torch is imported only when a name needs it.
    code = "import sys, rrsis; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_cli_checks_inputs_and_outputs_before_loading_the_model(folder, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Segmenter, "from_pretrained", no_model)
    out = tmp_path / "out"
    assert main(["predict-batch", str(tmp_path / "nope"), "-e", "road", "-o", str(out)]) == 2
    out.mkdir()
    (out / "tile0.png").write_bytes(b"x")
    assert main(["predict-batch", str(folder), "-e", "road", "-o", str(out)]) == 2
    assert main(["predict-batch", str(folder), "-e", " ", "-o", str(tmp_path / "o2")]) == 2
    assert not (tmp_path / "o2").exists()


def test_probabilities_are_float_tiffs_on_the_inputs_grid(folder, tmp_path, geotiff, pixel_model):
    seg = Segmenter(pixel_model, compose="none")
    geotiff(folder / "geo.tif", 70, 90)
    out = tmp_path / "out"
    predict_images(
        [folder], "red", out, seg, BatchConfig(probabilities=True, vector=True, progress=False)
    )
    for name in ("tile0", "geo"):  # a PNG input gets a TIFF too
        path = out / f"{name}.tif"
        image = to_rgb_uint8(folder / (f"{name}.png" if name == "tile0" else "geo.tif"))
        with rasterio.open(path) as ds:
            assert ds.dtypes[0] == "float32"
            np.testing.assert_allclose(ds.read(1), seg(image, "red", return_probs=True), atol=1e-6)
            if name == "geo":
                with rasterio.open(folder / "geo.tif") as src:
                    assert ds.crs == src.crs and ds.transform == src.transform
    with pytest.raises(RRSISError, match="float32 TIFF"):
        predict_images(
            [folder],
            "red",
            tmp_path / "png",
            seg,
            BatchConfig(probabilities=True, mask_format="png"),
        )


def test_predict_probabilities_cli(tmp_path, capsys):
    import torch

    from rrsis.models.io import save_model
    from rrsis.models.registry import get_tiny_model

    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_model(get_tiny_model("lgce_effnet_minilm"), weights)
    image = _png(tmp_path / "in.png")
    base = ["predict", str(image), "road", "--model", str(weights), "--probabilities"]
    assert main([*base, "-o", str(tmp_path / "p.tif")]) == 0
    probs = np.asarray(Image.open(tmp_path / "p.tif"))
    assert probs.dtype == np.float32 and probs.shape == (64, 96)
    assert 0.0 <= probs.min() and probs.max() <= 1.0
    assert main([*base, "-o", str(tmp_path / "p.png")]) == 2
    assert "use a .tif path" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_vector_crs_needs_georeferenced_inputs(folder, tmp_path, geotiff, pixel_model, capsys):
    geotiff(folder / "geo.tif", 70, 90)
    seg = Segmenter(pixel_model, compose="none")
    kwargs = {"vector": True, "progress": False, "vector_crs": "EPSG:4326"}
    with pytest.warns(UserWarning, match="no CRS to reproject"):
        rows = predict_images([folder], "red", tmp_path / "out", seg, BatchConfig(**kwargs))
    status = {r["image"].rsplit("/", 1)[-1]: r["status"] for r in rows}
    assert status == {
        "geo.tif": "ok",
        "tile0.png": "error",
        "tile1.png": "error",
        "tile2.png": "error",
    }
    assert not (tmp_path / "out" / "tile0.png").exists()  # nothing written for them
    doc = json.loads((tmp_path / "out" / "geo.geojson").read_text())
    assert "crs" not in doc  # RFC 7946: lon/lat on WGS84, no legacy crs member
    ring = doc["features"][0]["geometry"]["coordinates"][0]
    assert max(len(repr(v).split(".")[-1]) for xy in ring for v in xy) <= 7
    with pytest.raises(RRSISError, match="unknown CRS"):
        predict_images(
            [folder], "red", tmp_path / "o2", seg, BatchConfig(vector=True, vector_crs="EPSG:x")
        )
    with pytest.raises(SystemExit):
        main(["predict-batch", str(folder), "-e", "x", "-o", str(tmp_path), "--vector-crs", "?"])
    assert "unknown CRS" in capsys.readouterr().err


def test_prepare_then_run_is_predict_images_and_the_config_checks_its_values(
    folder, tmp_path, pixel_model
):
    from rrsis.infer.batch import prepare_batch, run_batch

    seg = Segmenter(pixel_model, compose="none")
    config = BatchConfig(overlay=True, progress=False)
    batch = prepare_batch([folder], ["red", "blue"], tmp_path / "a", config)
    assert [p.name for p in batch.images[0].outputs()][-2:] == [
        "tile0_red_overlay.png",
        "tile0_blue_overlay.png",
    ]
    rows = run_batch(batch, seg)
    same = predict_images(
        [folder], ["red", "blue"], tmp_path / "b", seg, BatchConfig(overlay=True, progress=False)
    )
    assert [r["foreground_pct"] for r in rows] == [r["foreground_pct"] for r in same]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        p.name for p in (tmp_path / "b").iterdir()
    )
    with pytest.raises(TypeError, match="colour"):
        BatchConfig(colour="red")
    with pytest.raises(RRSISError, match="mask format"):
        BatchConfig(mask_format="jpg")
    with pytest.raises(RRSISError, match="one of overwrite and skip_existing"):
        BatchConfig(overwrite=True, skip_existing=True)
    with pytest.raises(RRSISError, match="min_area"):
        BatchConfig(min_area=-1.0)


def test_summary_says_what_decided_each_mask(folder, tmp_path, pixel_model):
    names = ["zebra", "zebra in the upper left"]
    config = BatchConfig(progress=False)
    predict_images([folder / "tile0.png"], names, tmp_path / "a", Segmenter(pixel_model), config)
    summary = _summary(tmp_path / "a")
    assert [r["decided_by"] for r in summary] == ["network", "position"]
    alone = Segmenter(pixel_model, compose="none")
    predict_images([folder / "tile0.png"], names, tmp_path / "b", alone, config)
    assert [r["decided_by"] for r in _summary(tmp_path / "b")] == ["network", "network"]
    (folder / "broken.png").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="skipped"):
        predict_images([folder], "zebra", tmp_path / "c", alone, config)
    broken = [r for r in _summary(tmp_path / "c") if r["image"].endswith("broken.png")]
    assert broken[0]["status"] == "error" and broken[0]["decided_by"] == ""
