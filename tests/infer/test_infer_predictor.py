"""Segmenter: inputs, batching of expressions, probabilities, errors and model loading."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rrsis.errors import ExpressionError, ImageReadError, ModelError
from rrsis.infer import images as images_module
from rrsis.infer.images import to_rgb_uint8
from rrsis.infer.predictor import Segmenter
from rrsis.infer.tiling import tile_starts
from rrsis.models import io as model_io


def _image(height=48, width=80, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _expected_probs(image: np.ndarray, expression: str) -> np.ndarray:
    """PixelModel's output computed by hand (valid when no resize happens)."""
    x = image.astype(np.float32) / 255.0
    x = (x - 0.5) / 0.5
    k = (min(ord(expression[0]), 255) - 96.0) / 4.0
    fg = k * (x[..., 0] - x[..., 1])
    return 1.0 / (1.0 + np.exp(-fg))


def test_numpy_pil_and_path_inputs_agree(pixel_model, tmp_path):
    image = _image(64, 64)
    seg = Segmenter(pixel_model)
    mask = seg(image, "zebra")
    assert mask.dtype == bool and mask.shape == (64, 64)
    np.testing.assert_array_equal(mask, _expected_probs(image, "zebra") > 0.5)
    np.testing.assert_array_equal(seg(Image.fromarray(image), "zebra"), mask)
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    np.testing.assert_array_equal(seg(path, "zebra"), mask)
    np.testing.assert_array_equal(seg(str(path), "zebra"), mask)


def test_output_has_the_image_size_for_any_shape(pixel_model):
    seg = Segmenter(pixel_model)
    probs = seg(_image(37, 101), "zebra", return_probs=True)
    assert probs.shape == (37, 101) and probs.dtype == np.float32
    assert 0.0 <= probs.min() and probs.max() <= 1.0


def test_several_expressions_use_one_forward(pixel_model):
    image = _image(64, 64)
    seg = Segmenter(pixel_model)
    probs = seg(image, ["zebra", "apple", "road"], return_probs=True)
    assert pixel_model.calls == 1 and pixel_model.batch_sizes == [3]
    assert len(probs) == 3
    for expression, p in zip(["zebra", "apple", "road"], probs):
        np.testing.assert_allclose(p, _expected_probs(image, expression), atol=1e-5)
    # The expressions really differ ('a' gives k=0.25, 'z' k=6.5).
    assert not np.allclose(probs[0], probs[1])


def test_threshold_changes_the_mask(pixel_model):
    image = _image(64, 64)
    low = Segmenter(pixel_model, threshold=0.2)(image, "zebra")
    high = Segmenter(pixel_model, threshold=0.8)(image, "zebra")
    assert low.sum() > high.sum()
    assert np.all(low[high])


def test_band_and_dtype_conversions(pixel_model):
    seg = Segmenter(pixel_model)
    grey = _image(64, 64)[..., 0]
    assert seg(grey, "zebra", return_probs=True).shape == (64, 64)
    rgba = np.concatenate([_image(64, 64), np.full((64, 64, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgba[..., :3])
    sixteen = (_image(64, 64).astype(np.uint16) * 200 + 50).astype(np.uint16)
    converted = to_rgb_uint8(sixteen)
    assert converted.dtype == np.uint8 and converted.max() == 255 and converted.min() == 0


def test_bad_inputs_raise_project_errors(pixel_model):
    seg = Segmenter(pixel_model)
    for expression in ("", "   \t", ["road", " "]):
        with pytest.raises(ExpressionError):
            seg(_image(), expression)
    with pytest.raises(ExpressionError):
        seg(_image(), [])
    with pytest.raises(ImageReadError, match="at least 32"):
        seg(_image(20, 200), "road")
    with pytest.raises(ImageReadError):
        seg(np.zeros((64, 64, 5), np.uint8), "road")
    with pytest.raises(ImageReadError):
        seg(12, "road")


def test_long_and_non_latin_expressions_warn(pixel_model):
    seg = Segmenter(pixel_model)
    with pytest.warns(UserWarning, match="truncated"):
        seg(_image(), "the very long red vehicle parked next to the big building")
    with pytest.warns(UserWarning, match="non-Latin"):
        mask = seg(_image(), "Straße 道路")
    assert mask.shape == (48, 80)


def test_large_image_warns_about_resizing(pixel_model):
    with pytest.warns(UserWarning, match="predict_scene"):
        mask = Segmenter(pixel_model)(_image(40, 300), "road")
    assert mask.shape == (40, 300)


def test_bfloat16_runs_close_to_float32(pixel_model):
    class ConvPixelModel(type(pixel_model)):
        """PixelModel with red - green as a 1x1 convolution, an op autocast runs in bfloat16
        (PixelModel's element-wise ops would give float32 results under autocast too)."""

        def __init__(self) -> None:
            super().__init__()
            self.mix = nn.Conv2d(3, 1, 1, bias=False)
            with torch.no_grad():
                self.mix.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1))

        def forward(self, image, word_ids, word_mask):
            scale = (word_ids[:, 0].float() - 96.0).view(-1, 1, 1) / 4.0
            fg = scale * self.mix(image)[:, 0]
            return torch.stack([torch.zeros_like(fg), fg], dim=1)

    model = ConvPixelModel()
    image = _image(64, 64)
    p32 = Segmenter(model)(image, "zebra", return_probs=True)
    np.testing.assert_allclose(p32, _expected_probs(image, "zebra"), atol=1e-5)
    p16 = Segmenter(model, dtype=torch.bfloat16)(image, "zebra", return_probs=True)
    assert p16.dtype == np.float32
    error = np.abs(p32 - p16).mean()
    assert 0 < error < 0.02  # bfloat16 was really used, and stays close


def test_missing_default_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(model_io, "default_weights_path", lambda: tmp_path / "none.safetensors")
    with pytest.raises(ModelError, match="default weights are missing"):
        Segmenter.from_pretrained()


class _Boom:
    def __reduce__(self):
        import os

        return (os.mkdir, ("SHOULD_NOT_EXIST",))


def test_pickle_checkpoint_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": _Boom()}, path)
    with pytest.raises(ModelError, match="refused"):
        Segmenter.from_pretrained(path)
    with pytest.raises(ModelError, match="pickle"):
        Segmenter.from_pretrained("lgce_effnet_minilm", weights=path)
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()
    with pytest.raises(ModelError, match="not found"):
        Segmenter.from_pretrained(tmp_path / "absent.safetensors")


def test_from_pretrained_folds_norms_and_a_passed_model_is_left_alone(tmp_path):
    from rrsis.models.io import load_model, save_model
    from rrsis.models.registry import get_tiny_model

    torch.manual_seed(0)
    model = get_tiny_model("lgce_effnet_minilm")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained-looking statistics, so that folding changes the weights
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    path = tmp_path / "tiny.safetensors"
    save_model(model, path)

    def n_norms(m: nn.Module) -> int:
        return sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())

    plain = Segmenter(load_model(path), threshold=0.5)
    assert plain.fused == {} and n_norms(plain.model) == n_norms(model) > 0
    fused = Segmenter.from_pretrained(path, threshold=0.5)
    assert fused.fused["batch_norms"] == n_norms(model) and n_norms(fused.model) == 0
    image = _image(64, 64, seed=3)
    expressions = ["the building along the road", "water"]
    p_plain = plain(image, expressions, return_probs=True)
    p_fused = fused(image, expressions, return_probs=True)
    for a, b in zip(p_plain, p_fused):
        np.testing.assert_allclose(b, a, atol=1e-4)


def test_a_folded_model_cannot_be_saved_as_if_it_were_the_original(tmp_path):
    from rrsis.models.io import save_model
    from rrsis.models.registry import get_tiny_model

    path = tmp_path / "tiny.safetensors"
    save_model(get_tiny_model("lgce_effnet_minilm"), path)
    seg = Segmenter.from_pretrained(path)
    with pytest.raises(ModelError, match="folded for inference"):
        save_model(seg.model, tmp_path / "again.safetensors")
    assert not (tmp_path / "again.safetensors").exists()


def test_many_pairs_are_split_into_forwards_of_at_most_max_rows(pixel_model):
    seg = Segmenter(pixel_model)
    tiles = np.stack([_image(64, 64, seed=s) for s in range(3)])
    names = ["zebra", "apple", "road", "sea"]
    ids, mask = seg.tokenize(names)
    seg.network.max_rows = 5
    probs = seg.predict_tiles(tiles, ids, mask)
    assert pixel_model.batch_sizes == [5, 5, 2]  # 4 expressions x 3 tiles
    for e, name in enumerate(names):
        for b in range(3):
            np.testing.assert_allclose(probs[e, b], _expected_probs(tiles[b], name), atol=1e-5)


def _pixel_probability(image: np.ndarray, expression: str) -> np.ndarray:
    """What PixelModel gives at native resolution: sigmoid(k_e * (red - green))."""
    k = (ord(expression[0]) - 96.0) / 4.0
    x = image.astype(np.float32) / 255.0
    red, green = (x[..., 0] - 0.5) / 0.5, (x[..., 1] - 0.5) / 0.5
    return 1.0 / (1.0 + np.exp(-k * (red - green)))


def test_large_images_are_read_in_windows_at_the_training_scale(pixel_model):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    # Windows of the model's input size: no resize, so each pixel is computed as it would be
    # at native resolution, and blending equal values changes nothing.
    seg = Segmenter(pixel_model, compose="none", window=64, window_overlap=16)
    assert seg.uses_windows(image.shape[:2]) and not seg.uses_windows((96, 96))
    probs = seg(image, ["zebra", "apple"], return_probs=True)
    for expression, prob in zip(["zebra", "apple"], probs):
        np.testing.assert_allclose(prob, _pixel_probability(image, expression), atol=1e-5)
    windows = len(tile_starts(150, 64, 48)) * len(tile_starts(230, 64, 48))
    assert sum(pixel_model.batch_sizes) == 2 * windows  # every window, each expression
    # The whole-image resize (tiling="never", or an image up to 1.5 windows) is another answer.
    whole = seg(image, "zebra", return_probs=True, tiling="never")
    assert np.abs(whole - probs[0]).max() > 0.1
    calls = len(pixel_model.batch_sizes)
    seg(image[:96, :96], "zebra")
    assert pixel_model.batch_sizes[calls:] == [1]
    with pytest.raises(ModelError, match="tiling"):
        seg(image, "zebra", tiling="sometimes")
    with pytest.raises(ModelError, match="window"):
        Segmenter(pixel_model, window=64, window_overlap=64)


def test_windows_match_predict_scene(tmp_path, pixel_model):
    from PIL import Image

    from rrsis.infer.scene import SceneConfig, predict_scene

    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    seg = Segmenter(pixel_model, compose="none", window=128, window_overlap=32)  # resized to 64
    probs = seg(image, "zebra", return_probs=True, tiling="always")
    with pytest.warns(UserWarning, match="no CRS"):
        out = predict_scene(
            tmp_path / "img.png",
            "zebra",
            tmp_path / "m.tif",
            seg,
            SceneConfig(tile=128, overlap=32, probabilities=True, progress=False),
        )
    import rasterio

    with rasterio.open(out) as ds:
        np.testing.assert_allclose(ds.read(1), probs, atol=1e-5)


def test_windows_leave_positions_to_the_whole_image_without_the_position_rule(pixel_model):
    image = np.random.default_rng(5).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    seg = Segmenter(pixel_model, compose="none", window=64, window_overlap=16)
    seg(image, ["zebra in the upper left", "zebra"])
    # The positional expression went through one whole-image forward, the other through windows.
    assert len(tile_starts(200, 64, 48)) ** 2 == 16  # windows, 4 per forward
    assert sorted(pixel_model.batch_sizes) == [1, 4, 4, 4, 4]


def test_very_large_images_in_memory_warn_about_memory(pixel_model, monkeypatch):
    monkeypatch.setattr(images_module, "LARGE_IN_MEMORY", 150 * 150)
    seg = Segmenter(pixel_model, compose="none", window=64, window_overlap=16)
    image = np.zeros((160, 160, 3), np.uint8)
    with pytest.warns(UserWarning, match="GiB; predict_scene"):
        seg(image, "zebra")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seg(image[:140], "zebra")


def test_predict_says_what_decided_each_mask(pixel_model):
    image = _image(64, 96, seed=7)
    seg = Segmenter(pixel_model)
    names = ["zebra", "zebra in the upper left"]
    predictions = seg.predict(image, names)
    assert [p.expression for p in predictions] == names
    assert [p.decided_by for p in predictions] == ["network", "position"]
    for prediction, mask, prob in zip(
        predictions, seg(image, names), seg(image, names, return_probs=True)
    ):
        assert prediction.mask.dtype == bool and prediction.probability.dtype == np.float32
        np.testing.assert_array_equal(prediction.mask, mask)
        np.testing.assert_array_equal(prediction.probability, prob)
        np.testing.assert_array_equal(prediction.mask, prediction.probability > seg.threshold)
    # The position rule kept the upper-left objects only.
    assert not predictions[1].mask[32:].any() and predictions[0].mask[32:].any()
    alone = Segmenter(pixel_model, compose="none").predict(image, names)
    assert [p.decided_by for p in alone] == ["network", "network"]


def test_predict_reports_the_rule_on_windows_too(pixel_model):
    image = np.random.default_rng(8).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    seg = Segmenter(pixel_model, window=64, window_overlap=16)
    assert seg.uses_windows(image.shape[:2])
    predictions = seg.predict(image, ["zebra in the upper left", "zebra"])
    assert [p.decided_by for p in predictions] == ["position", "network"]
    assert predictions[0].mask.shape == (200, 200)


def test_compose_tiles_decided_per_expression_and_tile(pixel_model):
    seg = Segmenter(pixel_model)
    # The last tile has no object (red == green): the rule cannot decide there.
    tiles = np.stack([_image(64, 64, seed=0), _image(64, 64, seed=1), np.zeros((64, 64, 3))])
    names = ["zebra", "zebra in the upper left"]
    probs, decided = seg.compose_tiles_decided(tiles.astype(np.uint8), names)
    assert probs.shape == (2, 3, 64, 64)
    assert decided == [["network"] * 3, ["position", "position", "network"]]
    np.testing.assert_array_equal(seg.compose_tiles(tiles.astype(np.uint8), names), probs)


def test_folding_on_the_small_probe_gives_the_full_size_weights(monkeypatch):
    """The fold (what is folded, and the folded weights) does not depend on the probe's size."""
    from rrsis.infer import network
    from rrsis.models.registry import get_tiny_model

    def folded(probe_side: int) -> dict[str, torch.Tensor]:
        monkeypatch.setattr(network, "PROBE_SIDE", probe_side)
        torch.manual_seed(0)
        model = get_tiny_model("lgce_effnet_minilm", input_size=128).eval()
        fused = Segmenter(model, fuse=True).network.fused
        assert fused["batch_norms"] > 0
        return model.state_dict()

    small, full = folded(64), folded(10**6)  # 10**6: capped at input_size (128)
    assert small.keys() == full.keys()
    assert all(torch.equal(small[k], full[k]) for k in small)
