"""``rrsis predict`` / ``predict-scene`` / ``demo`` through ``rrsis.cli.main`` with a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import tifffile
from PIL import Image

from rrsis.cli import main
from rrsis.infer import demo as demo_module
from rrsis.infer.images import to_rgb_uint8
from rrsis.infer.predictor import Segmenter
from rrsis.models import io as model_io


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A random tiny ``lgce_effnet_minilm`` saved with rrsis.models.io (built once per file)."""
    import torch

    from rrsis.models.io import save_model
    from rrsis.models.registry import get_tiny_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_model(get_tiny_model("lgce_effnet_minilm"), path)
    return path


def _png(path, height=64, width=96, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_writes_mask_and_overlay(tmp_path, tiny_weights, capsys, error_line):
    image = _png(tmp_path / "in.png")
    before = image.read_bytes()
    mask, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    args = ["predict", str(image), "red car", "-o", str(mask), "--model", str(tiny_weights)]
    assert main([*args, "--overlay", str(overlay)]) == 0
    out = np.asarray(Image.open(mask))
    assert out.shape == (64, 96) and set(np.unique(out)) <= {0, 255}
    assert Image.open(overlay).size[0] > 0
    assert image.read_bytes() == before
    # An existing output is refused and left as it was.
    assert main(args) == 2
    assert "exists" in error_line()
    assert main([*args, "--overwrite", "--threshold", "1.0"]) == 0
    assert not np.asarray(Image.open(mask)).any()  # nothing is above probability 1
    assert (
        main(
            [
                "predict",
                str(image),
                "car",
                "-o",
                str(image),
                "--model",
                str(tiny_weights),
                "--overwrite",
            ]
        )
        == 2
    )
    assert image.read_bytes() == before


def test_predict_reads_16bit_tiff(tmp_path, tiny_weights):
    data = np.random.default_rng(1).integers(0, 4000, (64, 64, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "img16.tif", data)
    out = tmp_path / "mask.tif"
    code = main(
        [
            "predict",
            str(tmp_path / "img16.tif"),
            "road",
            "-o",
            str(out),
            "--model",
            str(tiny_weights),
        ]
    )
    assert code == 0
    # The CLI stretches 16-bit bands exactly as the library does.
    image = to_rgb_uint8(tmp_path / "img16.tif")
    expected = Segmenter.from_pretrained(tiny_weights)(image, "road")
    np.testing.assert_array_equal(tifffile.imread(out), expected.astype(np.uint8) * 255)


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_weights, capsys, error_line):
    model = ["--model", str(tiny_weights)]
    good = _png(tmp_path / "good.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    tiny = _png(tmp_path / "tiny.png", 20, 20)
    cases = [
        ([str(truncated), "road"], "cannot decode"),
        ([str(tiny), "road"], "at least 32"),
        ([str(good), "   "], "empty"),
        ([str(tmp_path / "absent.png"), "road"], "not found"),
    ]
    for argv, message in cases:
        out = tmp_path / "out.png"
        assert main(["predict", *argv, "-o", str(out), *model]) == 2
        assert message in error_line()
        assert not out.exists()
    assert (
        main(
            [
                "predict",
                str(good),
                "road",
                "-o",
                str(tmp_path / "o.png"),
                "--model",
                str(tmp_path / "absent.safetensors"),
            ]
        )
        == 2
    )
    assert "not found" in error_line()


class _Payload:
    def __reduce__(self):
        import os

        return (os.mkdir, ("PWNED",))


def test_code_carrying_checkpoint_and_wrong_weights_refused(
    tmp_path, tiny_weights, capsys, monkeypatch, error_line
):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    image = _png(tmp_path / "img.png")
    evil = tmp_path / "evil.ckpt"
    torch.save({"rrsis_config": {"name": "lgce_effnet_minilm"}, "state_dict": _Payload()}, evil)
    assert main(["predict", str(image), "road", "-o", "m.png", "--model", str(evil)]) == 2
    assert "refused" in error_line()
    assert not (tmp_path / "PWNED").exists()

    # Same tensors, but the config claims another decoder width: shapes cannot match.
    with safe_open(str(tiny_weights), framework="pt") as handle:
        state = {k: handle.get_tensor(k) for k in handle.keys()}
        config = json.loads(handle.metadata()["rrsis_config"])
    config["kwargs"]["decoder_channels"] = 24
    wrong = tmp_path / "wrong.safetensors"
    save_file(state, str(wrong), metadata={"rrsis_config": json.dumps(config)})
    assert main(["predict", str(image), "road", "-o", "m.png", "--model", str(wrong)]) == 2
    assert "do not fit" in error_line()
    assert not (tmp_path / "m.png").exists()


def test_predict_scene_cli_with_vector(tmp_path, tiny_weights, geotiff, capsys, error_line):
    src = geotiff(tmp_path / "scene.tif", 700, 600)
    dst, vec = tmp_path / "mask.tif", tmp_path / "mask.geojson"
    argv = [
        "predict-scene",
        str(src),
        "road",
        "red car",
        "-o",
        str(dst),
        "--vector",
        str(vec),
        "--tile",
        "128",
        "--overlap",
        "32",
        "--model",
        str(tiny_weights),
        "--no-progress",
    ]
    assert main(argv) == 0
    with rasterio.open(dst) as out, rasterio.open(src) as ref:
        assert out.crs == ref.crs and out.transform == ref.transform
        assert out.count == 2 and out.shape == (700, 600)
    collection = json.loads(vec.read_text())
    assert collection["type"] == "FeatureCollection"
    assert {f["properties"]["expression"] for f in collection["features"]} <= {"road", "red car"}
    assert main(argv) == 2
    assert "exists" in error_line()
    bad = tmp_path / "notatiff.tif"
    bad.write_bytes(b"II*\x00garbage")
    assert (
        main(
            [
                "predict-scene",
                str(bad),
                "road",
                "-o",
                str(tmp_path / "x.tif"),
                "--model",
                str(tiny_weights),
            ]
        )
        == 2
    )
    assert "cannot open" in error_line()
    assert not (tmp_path / "x.tif").exists()


def test_demo_without_weights_says_so(tmp_path, monkeypatch, capsys, error_line):
    monkeypatch.setattr(model_io, "default_weights_path", lambda: tmp_path / "none.safetensors")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    assert "default weights are missing" in error_line()


def test_demo_segments_samples_and_prints_timings(tmp_path, tiny_weights, monkeypatch, capsys):
    samples = tmp_path / "samples"
    samples.mkdir()
    _png(samples / "a.png", 64, 64, seed=1)
    _png(samples / "b.png", 80, 64, seed=2)
    (samples / "expressions.json").write_text(json.dumps({"a.png": ["road", "car on the road"]}))
    monkeypatch.setattr(demo_module, "SAMPLES_DIR", samples)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", str(tiny_weights)]) == 0
    printed = capsys.readouterr().out
    n_calls = 2 + len(demo_module.DEFAULT_EXPRESSIONS)
    assert printed.count(" ms ") == n_calls
    # Each line says what decided its mask.
    decided = printed.count("network alone") + printed.count("rules: ")
    assert decided == n_calls
    assert len(list(out.glob("*.png"))) == n_calls


@pytest.fixture
def built_segmenters(monkeypatch):
    """Every Segmenter the CLI builds during the test, in order."""
    built = []
    original = Segmenter.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Segmenter, "__init__", spy)
    return built


def test_predict_compose_option(tmp_path, tiny_weights, capsys, built_segmenters, error_line):
    image = _png(tmp_path / "in.png")
    base = ["predict", str(image), "building in the upper left", "--model", str(tiny_weights)]
    assert main([*base, "-o", str(tmp_path / "a.png")]) == 0
    assert main([*base, "-o", str(tmp_path / "b.png"), "--compose", "none"]) == 0
    assert main([*base, "-o", str(tmp_path / "c.png"), "--compose", "position,relation"]) == 0
    assert [seg.compose for seg in built_segmenters] == [
        {"position", "relation", "attribute"},
        set(),
        {"position", "relation"},
    ]
    assert main([*base, "-o", str(tmp_path / "x.png"), "--compose", "colour"]) == 2
    assert "unknown composition rule" in error_line()
    assert not (tmp_path / "x.png").exists()


def test_bf16_option_builds_a_bfloat16_segmenter(tmp_path, tiny_weights, built_segmenters):
    import torch

    image = _png(tmp_path / "in.png")
    base = ["predict", str(image), "road", "--model", str(tiny_weights)]
    assert main([*base, "-o", str(tmp_path / "a.png")]) == 0
    assert main([*base, "-o", str(tmp_path / "b.png"), "--bf16"]) == 0
    assert [seg.dtype for seg in built_segmenters] == [torch.float32, torch.bfloat16]
    assert np.asarray(Image.open(tmp_path / "b.png")).shape == (64, 96)


def test_predict_scene_compose_option(tmp_path, tiny_weights, geotiff, built_segmenters):
    src = geotiff(tmp_path / "scene.tif", 200, 160)
    base = ["predict-scene", str(src), "building along the road", "--model", str(tiny_weights)]
    base += ["--tile", "128", "--overlap", "32", "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "a.tif")]) == 0
    assert main([*base, "-o", str(tmp_path / "b.tif"), "--compose", "none"]) == 0
    assert [seg.compose for seg in built_segmenters] == [
        {"position", "relation", "attribute"},
        set(),
    ]
    assert (tmp_path / "a.tif").exists() and (tmp_path / "b.tif").exists()


def test_predict_keeps_a_geotiffs_georeferencing(tmp_path, tiny_weights, geotiff):
    import rasterio

    src = geotiff(tmp_path / "tile.tif", 64, 96)
    out = tmp_path / "mask.tif"
    assert main(["predict", str(src), "road", "-o", str(out), "--model", str(tiny_weights)]) == 0
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.crs == a.crs and b.crs.to_epsg() == 32640
        assert b.transform == a.transform
        assert (b.count, b.dtypes[0], b.shape) == (1, "uint8", (64, 96))
        assert set(np.unique(b.read(1))) <= {0, 255}
    # A plain image in, a plain TIFF out (no georeferencing invented); same mask either way.
    png = _png(tmp_path / "tile.png")
    plain = tmp_path / "plain.tif"
    assert main(["predict", str(png), "road", "-o", str(plain), "--model", str(tiny_weights)]) == 0
    with rasterio.open(plain) as c:
        assert c.crs is None


def test_predict_bands_of_a_multispectral_tiff(tmp_path, tiny_weights, capsys, error_line):
    data = np.random.default_rng(2).integers(0, 4000, (64, 64, 6), dtype=np.uint16)
    # Band-sequential, as GDAL writes multispectral GeoTIFFs.
    tifffile.imwrite(
        tmp_path / "ms.tif",
        np.moveaxis(data, -1, 0),
        photometric="minisblack",
        planarconfig="separate",
    )
    out = tmp_path / "mask.tif"
    base = ["predict", str(tmp_path / "ms.tif"), "road", "--model", str(tiny_weights)]
    assert main([*base, "-o", str(out)]) == 2
    assert "--bands R,G,B" in error_line() and not out.exists()
    assert main([*base, "-o", str(out), "--bands", "5,3,2"]) == 0
    # Bands 5, 3, 2 of the file, as the library reads them from an array.
    expected = Segmenter.from_pretrained(tiny_weights)(to_rgb_uint8(data, bands=(5, 3, 2)), "road")
    np.testing.assert_array_equal(tifffile.imread(out), expected.astype(np.uint8) * 255)
    assert main([*base, "-o", str(tmp_path / "x.tif"), "--bands", "7,3,2"]) == 2
    assert "do not fit this 6-band image" in error_line()


def test_predict_vector_in_the_images_crs_or_in_pixels(tmp_path, tiny_weights, geotiff):
    import rasterio
    from shapely.geometry import box, shape

    src = geotiff(tmp_path / "tile.tif", 64, 96)
    base = ["--model", str(tiny_weights), "--threshold", "0.0"]  # every pixel foreground
    vector = tmp_path / "tile.geojson"
    args = ["predict", str(src), "road", "-o", str(tmp_path / "m.tif"), "--vector", str(vector)]
    assert main([*args, *base]) == 0
    collection = json.loads(vector.read_text())
    with rasterio.open(src) as ds:
        bounds = box(*ds.bounds)
    area = sum(shape(f["geometry"]).area for f in collection["features"])
    assert area == pytest.approx(bounds.area)  # the whole tile, in metres (0.5 m pixels)
    assert all(shape(f["geometry"]).within(bounds.buffer(1e-6)) for f in collection["features"])
    assert collection["features"][0]["properties"]["expression"] == "road"
    png = _png(tmp_path / "tile.png")
    pixels = tmp_path / "png.geojson"
    args = ["predict", str(png), "road", "-o", str(tmp_path / "m.png"), "--vector", str(pixels)]
    assert main([*args, *base]) == 0
    features = json.loads(pixels.read_text())["features"]
    assert sum(shape(f["geometry"]).area for f in features) == pytest.approx(64 * 96)
    assert main([*args, *base]) == 2  # outputs exist: refused without --overwrite


def test_tiling_option(tmp_path, tiny_weights, built_segmenters):
    image = _png(tmp_path / "in.png", height=800, width=900)
    base = ["predict", str(image), "road", "--model", str(tiny_weights)]
    assert main([*base, "-o", str(tmp_path / "a.png")]) == 0
    assert main([*base, "-o", str(tmp_path / "b.png"), "--tiling", "never"]) == 0
    assert [seg.tiling for seg in built_segmenters] == ["auto", "never"]
    assert built_segmenters[0].uses_windows((800, 900))
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in "ab")
    assert a.shape == b.shape == (800, 900)
    batch = ["predict-batch", str(image), "-e", "road", "--model", str(tiny_weights)]
    assert main([*batch, "-o", str(tmp_path / "out"), "--tiling", "never", "--no-progress"]) == 0
    assert built_segmenters[-1].tiling == "never"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "in.png")), b)


def test_window_option(tmp_path, tiny_weights, built_segmenters):
    image = _png(tmp_path / "in.png", height=900, width=1000)
    base = ["predict", str(image), "road", "--model", str(tiny_weights)]
    assert main([*base, "-o", str(tmp_path / "a.png"), "--window", "1024"]) == 0
    assert built_segmenters[-1].window == 1024
    assert not built_segmenters[-1].uses_windows((900, 1000))  # under 1.5 windows: whole
    assert main([*base, "-o", str(tmp_path / "b.png"), "--window", "8"]) == 2  # under 32 px


def test_commands_say_what_decided_each_mask(tmp_path, tiny_weights, geotiff, capsys):
    image = _png(tmp_path / "in.png")
    args = ["predict", str(image), "red car", "--model", str(tiny_weights)]
    assert main([*args, "-o", str(tmp_path / "a.png"), "--compose", "none"]) == 0
    assert capsys.readouterr().out.strip().endswith("foreground (96x64), network alone")
    src = geotiff(tmp_path / "scene.tif", 200, 160)
    argv = ["predict-scene", str(src), "road", "building in the upper left", "large building"]
    argv += ["-o", str(tmp_path / "m.tif"), "--model", str(tiny_weights), "--no-progress"]
    assert main([*argv, "--tile", "128", "--overlap", "32"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1:] == [
        "'road': network alone",
        "'building in the upper left': rules: position (the scene's region)",
        "'large building': rules: attribute (in each window where it decides)",
    ]
