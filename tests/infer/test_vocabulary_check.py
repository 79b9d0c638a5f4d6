"""Expressions with words the model was not trained on are reported, in the result and a warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from rrsis import Segmenter
from rrsis.cli import main
from rrsis.data.io import write_image
from rrsis.models.io import load_model, save_model
from rrsis.models.registry import get_tiny_model

IMAGE = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def shipped() -> Segmenter:
    return Segmenter.from_pretrained()


def test_shipped_model_reports_ship_as_unknown(shipped: Segmenter) -> None:
    with pytest.warns(UserWarning, match="not trained on: ship; its mask is a guess"):
        (prediction,) = shipped.predict(IMAGE, "ship")
    assert prediction.unknown_words == ("ship",)


def test_known_expression_is_silent(shipped: Segmenter) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (prediction,) = shipped.predict(IMAGE, "building along the road")
        (plural,) = shipped.predict(IMAGE, "the trees near buildings")
    assert prediction.unknown_words == () and plural.unknown_words == ()


def test_cli_prints_one_warning_line(tmp_path, capsys) -> None:
    write_image(tmp_path / "a.png", IMAGE)
    argv = ["predict", str(tmp_path / "a.png"), "ship", "-o", str(tmp_path / "m.png")]
    assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    expected = (
        "rrsis: warning: expression 'ship' has words the model was not trained on: ship; "
        "its mask is a guess"
    )
    assert lines.count(expected) == 1, lines


def test_vocabulary_round_trips_and_a_model_without_one_warns_about_nothing(tmp_path) -> None:
    torch.manual_seed(0)
    model = get_tiny_model("lgce_effnet_minilm").eval()
    plain = load_model(save_model(model, tmp_path / "plain.safetensors"))
    assert getattr(plain, "vocabulary", None) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (prediction,) = Segmenter(plain).predict(IMAGE, "ship")
    assert prediction.unknown_words == ()
    model.vocabulary = frozenset(["building", "road"])
    loaded = load_model(save_model(model, tmp_path / "words.safetensors"))
    assert loaded.vocabulary == {"building", "road"}
    with pytest.warns(UserWarning, match="not trained on: ship"):
        (prediction,) = Segmenter(loaded).predict(IMAGE, "ship near the road")
    assert prediction.unknown_words == ("ship",)


def test_predict_scene_cli_warns_about_unknown_words(tmp_path, capsys) -> None:
    import rasterio
    from rasterio.transform import from_origin

    scene = tmp_path / "scene.tif"
    profile = {"driver": "GTiff", "height": IMAGE.shape[0], "width": IMAGE.shape[1], "count": 3}
    profile |= {"dtype": "uint8", "crs": "EPSG:32640"}
    profile |= {"transform": from_origin(400000.0, 2700000.0, 0.5, 0.5)}
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(np.moveaxis(IMAGE, -1, 0))
    argv = ["predict-scene", str(scene), "ship", "building", "-o", str(tmp_path / "m.tif")]
    assert main([*argv, "--no-progress"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert sum("not trained on: ship" in line for line in lines) == 1, lines
    assert not any("'building'" in line and "not trained" in line for line in lines)
