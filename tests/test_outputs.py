"""Every command checks every output location before it reads an input or loads a model.

A bad output (its parent is a file, or a location nothing can be created in, such as /proc)
is one ``rrsis: error:`` line and exit code 2, with no traceback; the loaders and readers are
replaced by functions that fail loudly, so reaching any of them fails the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrsis.cli import main


class Reached(AssertionError):
    """Raised by every loader and reader: the command started its work."""


def _refuse(*args, **kwargs):
    raise Reached("work started before the outputs were checked")


@pytest.fixture
def no_work(monkeypatch):
    """Model loaders, dataset readers and builders that fail when called."""
    import rrsis.eval.evaluate
    import rrsis.infer.batch
    import rrsis.models.convert
    import rrsis.models.io
    from rrsis.cli import data_build, data_format, predict
    from rrsis.data.taxonomy import Taxonomy
    from rrsis.infer.predictor import Segmenter

    monkeypatch.setattr(Segmenter, "from_pretrained", _refuse)
    monkeypatch.setattr(predict, "to_rgb_uint8", _refuse)
    monkeypatch.setattr(rrsis.infer.batch, "find_images", _refuse)
    monkeypatch.setattr(rrsis.models.io, "resolve_model", _refuse)
    monkeypatch.setattr(rrsis.models.io, "load_model", _refuse)
    monkeypatch.setattr(rrsis.models.convert, "convert_lavt_checkpoint", _refuse)
    monkeypatch.setattr(rrsis.eval.evaluate, "open_dataset", _refuse)
    monkeypatch.setattr(data_format, "open_splits", _refuse)
    monkeypatch.setattr(data_format, "detect_format", _refuse)
    for name in ("build_synthetic_dataset", "convert_dubai", "convert_label_maps"):
        monkeypatch.setattr(data_build, name, _refuse)
    monkeypatch.setattr(Taxonomy, "load", _refuse)


@pytest.fixture
def inputs(tmp_path) -> dict[str, str]:
    """Existing inputs (never read here) and ``afile``, a regular file used as a parent."""
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not read")
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "data").mkdir()
    return {"image": str(image), "weights": str(weights), "dir": str(tmp_path / "data")}


# Each case: the argument list, given the inputs and a bad location ``bad`` (without suffix).
CASES = {
    "predict -o": lambda i, bad: ["predict", i["image"], "car", "-o", f"{bad}.png"],
    "predict --overlay": lambda i, bad: [
        *["predict", i["image"], "car", "-o", i["dir"] + "/m.png", "--overlay", f"{bad}.png"]
    ],
    "predict --vector": lambda i, bad: [
        *["predict", i["image"], "car", "-o", i["dir"] + "/m.png", "--vector", f"{bad}.geojson"]
    ],
    "predict-batch -o": lambda i, bad: ["predict-batch", i["image"], "-e", "car", "-o", bad],
    "predict-scene -o": lambda i, bad: ["predict-scene", i["image"], "car", "-o", f"{bad}.tif"],
    "predict-scene --vector": lambda i, bad: [
        *["predict-scene", i["image"], "car", "-o", i["dir"] + "/s.tif"],
        *["--vector", f"{bad}.geojson"],
    ],
    "demo --out": lambda i, bad: ["demo", "--out", bad],
    "evaluate --out": lambda i, bad: [
        *["evaluate", "--model", i["weights"], "--data", i["dir"], "--out", f"{bad}.json"]
    ],
    "evaluate --save-predictions": lambda i, bad: [
        *["evaluate", "--model", i["weights"], "--data", i["dir"], "--save-predictions", bad]
    ],
    "compare --out": lambda i, bad: ["compare", "a.json", "b.json", "--out", f"{bad}.json"],
    "calibrate --write": lambda i, bad: [
        *["calibrate", "--model", i["weights"], "--data", i["dir"], "--split", "val"],
        *["--write", f"{bad}.safetensors"],
    ],
    "data synth": lambda i, bad: ["data", "synth", bad, "--n", "2"],
    "data dubai": lambda i, bad: ["data", "dubai", i["dir"], bad],
    "data from-labels": lambda i, bad: [
        *["data", "from-labels", i["dir"], i["dir"], bad, "--taxonomy", i["image"]]
    ],
    "data export": lambda i, bad: ["data", "export", i["dir"], bad, "--format", "refsegrs"],
    "data show -o": lambda i, bad: ["data", "show", i["dir"], "0", "-o", f"{bad}.png"],
    "models convert-lavt -o": lambda i, bad: [
        *["models", "convert-lavt", i["image"], "-o", f"{bad}.safetensors"]
    ],
}


@pytest.mark.parametrize("case", CASES)
def test_output_under_a_file_is_refused_before_any_work(
    case, tmp_path, inputs, no_work, error_line
):
    bad = str(tmp_path / "afile" / "out")
    assert main(CASES[case](inputs, bad)) == 2
    line = error_line()
    assert "afile" in line and "not a directory" in line, line
    assert not (tmp_path / "data").joinpath("m.png").exists()


@pytest.mark.parametrize("case", ["predict -o", "predict-batch -o", "evaluate --out", "data synth"])
def test_output_where_nothing_can_be_created_is_refused(case, inputs, no_work, error_line):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    assert main(CASES[case](inputs, "/proc/rrsis-out")) == 2
    assert "cannot write in /proc" in error_line()


def test_predict_batch_output_folder_that_is_a_file(tmp_path, inputs, no_work, error_line):
    assert main(CASES["predict-batch -o"](inputs, str(tmp_path / "afile"))) == 2
    assert "is not a directory" in error_line()
