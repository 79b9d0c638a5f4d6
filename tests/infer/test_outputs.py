"""What ``rrsis predict``, ``predict-batch`` and ``predict-scene`` leave on disk when things go
wrong: a file another run wrote meanwhile is never replaced, a failed step leaves no half
result, temporaries are recognisable and those of killed runs are cleaned, and every output gets
the mode the user's umask gives."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from rrsis.cli import main
from rrsis.data.files import is_temp, temp_path
from rrsis.errors import RRSISError
from rrsis.infer.predictor import Segmenter

from .conftest import ConstModel, make_geotiff

OTHER_RUN = b"written by another run"


@pytest.fixture
def segmenter(monkeypatch):
    """``--model`` replaced by a constant model (every pixel foreground): no weights to load."""
    from rrsis.cli import predict

    monkeypatch.setattr(
        predict, "build_segmenter", lambda args: Segmenter(ConstModel(), compose="none")
    )


def _png(path, size=64):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _appears_during_predict(monkeypatch, target):
    """Another run writes ``target`` while the model runs (after the outputs were checked)."""
    real = Segmenter.predict

    def predict(self, *args, **kwargs):
        target.write_bytes(OTHER_RUN)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "predict", predict)


def test_predict_never_replaces_a_file_that_appeared_meanwhile(
    tmp_path, segmenter, monkeypatch, capsys, error_line
):
    image, mask, vector = _png(tmp_path / "in.png"), tmp_path / "m.png", tmp_path / "m.geojson"
    _appears_during_predict(monkeypatch, mask)
    assert main(["predict", str(image), "car", "-o", str(mask), "--vector", str(vector)]) == 2
    assert "exists" in error_line()
    assert mask.read_bytes() == OTHER_RUN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "m.png"]
    # --overwrite: the user asked for it.
    assert main(["predict", str(image), "car", "-o", str(mask), "--overwrite"]) == 0
    assert np.asarray(Image.open(mask)).all()


def test_predict_batch_never_replaces_a_file_that_appeared_meanwhile(
    tmp_path, segmenter, monkeypatch, capsys, error_line
):
    image, out = _png(tmp_path / "in.png"), tmp_path / "out"
    _appears_during_predict(monkeypatch, out / "in.png")
    assert main(["predict-batch", str(image), "-e", "car", "-o", str(out), "--no-progress"]) == 2
    assert "exists" in error_line()
    assert (out / "in.png").read_bytes() == OTHER_RUN


def test_predict_scene_never_replaces_a_file_that_appeared_meanwhile(
    tmp_path, segmenter, monkeypatch, capsys, error_line
):
    from rrsis.infer import scene

    src = make_geotiff(tmp_path / "scene.tif", 96, 96)
    dst, vector = tmp_path / "mask.tif", tmp_path / "mask.geojson"
    real = scene.blended_rows

    def rows(*args, **kwargs):
        dst.write_bytes(OTHER_RUN)
        yield from real(*args, **kwargs)

    monkeypatch.setattr(scene, "blended_rows", rows)
    args = ["predict-scene", str(src), "car", "-o", str(dst), "--vector", str(vector)]
    assert main([*args, "--tile", "64", "--overlap", "16", "--no-progress"]) == 2
    assert "exists" in error_line()
    assert dst.read_bytes() == OTHER_RUN
    assert not vector.exists()  # both outputs or neither
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "scene.tif"]


def test_a_failed_step_removes_what_predict_wrote(
    tmp_path, segmenter, monkeypatch, capsys, error_line
):
    from rrsis.infer.vector import BandVectorizer

    image = _png(tmp_path / "in.png")
    args = ["predict", str(image), "car", "-o", str(tmp_path / "m.png")]
    args += ["--overlay", str(tmp_path / "o.png"), "--vector", str(tmp_path / "m.geojson")]

    def fail(self, masks, row_offset):
        raise RRSISError("polygons failed")

    with monkeypatch.context() as patch:
        patch.setattr(BandVectorizer, "add_rows", fail)
        assert main(args) == 2
    assert "polygons failed" in error_line()
    assert [p.name for p in tmp_path.iterdir()] == ["in.png"]
    assert main(args) == 0  # the rerun is not refused with "exists"


@pytest.mark.parametrize("command", ["predict", "predict-scene"])
def test_vector_crs_without_a_crs_is_refused_before_any_work(
    command, tmp_path, monkeypatch, capsys, error_line
):
    from rrsis.cli import predict

    def refuse(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(predict, "build_segmenter", refuse)
    src = make_geotiff(tmp_path / "plain.tif", 64, 64, crs=None)
    args = [command, str(src), "car", "-o", str(tmp_path / "m.tif")]
    args += ["--vector", str(tmp_path / "m.geojson"), "--vector-crs", "EPSG:4326"]
    assert main(args) == 2
    assert "no CRS" in error_line()
    assert [p.name for p in tmp_path.iterdir()] == ["plain.tif"]


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _plant_temps(folder, name="m.png"):
    """A temporary of a killed run and one of a run still writing, named as rrsis names them."""
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / f".{name}.{_dead_pid()}-0badf00d.rrsis-tmp.png"
    live = folder / f".{name}.{os.getppid()}-0600dd00.rrsis-tmp.png"
    for path in (stale, live):
        path.write_bytes(b"")
        assert is_temp(path)
    return stale, live


@pytest.mark.parametrize("command", ["predict", "predict-batch", "predict-scene"])
def test_stale_temporaries_are_cleaned_and_live_ones_kept(command, tmp_path, segmenter):
    image = make_geotiff(tmp_path / "in.tif", 64, 64)
    out = tmp_path / "out"
    stale, live = _plant_temps(out)
    if command == "predict-batch":
        args = ["predict-batch", str(image), "-e", "car", "-o", str(out), "--no-progress"]
    else:
        args = [command, str(image), "car", "-o", str(out / "m.tif")]
        args += ["--vector", str(out / "m.geojson")]
    assert main(args) == 0
    assert not stale.exists() and live.exists()
    if command == "predict-batch":  # a resumed run cleans too
        stale, live = _plant_temps(out)
        assert main([*args, "--skip-existing"]) == 0
        assert not stale.exists() and live.exists()


def test_scene_temporaries_are_named_recognisably(tmp_path, segmenter, monkeypatch):
    from rrsis.infer import raster, scene, vector

    seen = []
    for module, name in ((scene, "open_output"), (raster, "copy")):
        if module is raster:
            import rasterio.shutil

            module, real = rasterio.shutil, rasterio.shutil.copy
        else:
            real = getattr(module, name)

        def spy(path, *args, _real=real, **kwargs):
            seen.append(path)
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    real_init = vector.BandVectorizer.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        seen.append(self._tmp)

    monkeypatch.setattr(vector.BandVectorizer, "__init__", init)
    src = make_geotiff(tmp_path / "scene.tif", 64, 64)
    args = ["predict-scene", str(src), "car", "-o", str(tmp_path / "m.tif"), "--cog"]
    assert main([*args, "--vector", str(tmp_path / "m.geojson")]) == 0
    assert len(seen) == 3  # raster, its COG copy's source, polygons
    assert all(is_temp(p) and p.parent == tmp_path for p in seen), seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.geojson", "m.tif", "scene.tif"]
    assert is_temp(temp_path(tmp_path / "m.tif"))


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(folder) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.is_file()}


def test_every_output_gets_the_umask_mode(tmp_path, segmenter, umask):
    png = _png(tmp_path / "in.png")
    tif = make_geotiff(tmp_path / "geo.tif", 64, 64)
    expected = 0o666 & ~umask
    out = tmp_path / "predict"
    assert main(["predict", str(png), "car", "-o", str(out / "m.png")]) == 0
    args = ["predict", str(tif), "car", "-o", str(out / "g.tif"), "--overlay", str(out / "o.png")]
    assert main([*args, "--vector", str(out / "g.geojson")]) == 0
    args = ["predict", str(png), "car", "-o", str(out / "p.tif"), "--probabilities"]
    assert main(args) == 0
    batch = tmp_path / "batch"
    args = ["predict-batch", str(png), str(tif), "-e", "car", "-o", str(batch), "--no-progress"]
    assert main([*args, "--overlay", "--vector"]) == 0
    scene = tmp_path / "scene"
    args = ["predict-scene", str(tif), "car", "--no-progress"]
    assert main([*args, "-o", str(scene / "s.tif"), "--vector", str(scene / "s.geojson")]) == 0
    assert main([*args, "-o", str(scene / "cog.tif"), "--cog"]) == 0
    assert main([*args, "-o", str(scene / "ov.tif"), "--overviews"]) == 0
    modes = _modes(out) | {f"batch/{k}": v for k, v in _modes(batch).items()}
    modes |= {f"scene/{k}": v for k, v in _modes(scene).items()}
    assert len(modes) == 5 + 7 + 4, sorted(modes)
    assert modes == dict.fromkeys(modes, expected), {k: oct(v) for k, v in modes.items()}
