"""Every registered model at its tiny size: forward, backward, save/load, text dependence, errors."""

from __future__ import annotations

import time

import pytest
import torch

from rrsis.errors import ModelError
from rrsis.models import registry
from rrsis.models.base import RRSISModel
from rrsis.models.baselines.common import BaselineModel
from rrsis.models.io import load_model, save_model
from rrsis.models.lavt import LAVT
from rrsis.models.registry import MODELS, get_model, get_tiny_model, list_models, register_model

MODEL_NAMES = list_models()
TEXTS = ["the red car next to the road", "building"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(model: RRSISModel, size: int = 64, batch: int = 2):
    torch.manual_seed(0)
    image = torch.randn(batch, 3, size, size)
    word_ids, word_mask = model.tokenize(TEXTS[:batch])
    return image, word_ids, word_mask


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tiny_model_contract(name: str, tmp_path) -> None:
    model = get_tiny_model(name)
    assert isinstance(model, RRSISModel)
    assert model.config["name"] == name
    image, word_ids, word_mask = _inputs(model)
    assert word_ids.dtype == torch.long and word_mask.dtype == torch.long
    assert word_ids.shape == word_mask.shape and word_ids.shape[0] == 2

    # Forward + backward in training mode; gradients must reach fusion/decoder parameters.
    model.train()
    # CPU time, not wall time: the budget (< 2 s forward + backward) must hold on a busy machine.
    start = time.process_time()
    logits = model(image, word_ids, word_mask)
    assert logits.shape == (2, 2, 64, 64)
    assert torch.isfinite(logits).all()
    target = torch.rand(2, 64, 64) > 0.5
    torch.nn.functional.cross_entropy(logits, target.long()).backward()
    assert time.process_time() - start < 2.0
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    reached = {n.split(".")[0] for n, g in grads.items() if g is not None and g.abs().sum() > 0}
    if isinstance(model, LAVT):
        assert {"decoder", "fusions", "gates", "vision"} <= reached, reached
    else:
        assert isinstance(model, BaselineModel)
        assert {"head", "vision"} <= reached, reached
    model.zero_grad()

    # Save/load round trip gives identical logits in eval mode.
    model.eval()
    with torch.no_grad():
        before = model(image, word_ids, word_mask)
        path = save_model(model, tmp_path / "model.safetensors")
        loaded = load_model(path)
        after = loaded(image, word_ids, word_mask)
    assert loaded.config == model.config
    torch.testing.assert_close(after, before)

    # The output depends on the expression.
    with torch.no_grad():
        other_ids, other_mask = model.tokenize(["the long building", "a small car"])
        other = model(image, other_ids, other_mask)
    assert not torch.allclose(other, before)

    # Wrong shapes raise ModelError with a clear message.
    with pytest.raises(ModelError, match=r"multiples of 32, got 50x64"):
        model(torch.randn(2, 3, 50, 64), word_ids, word_mask)
    with pytest.raises(ModelError, match=r"\(B,3,H,W\)"):
        model(torch.randn(2, 64, 64), word_ids, word_mask)
    with pytest.raises(ModelError, match="word_ids"):
        model(image, word_ids[0], word_mask)

    # Unknown keyword arguments are refused before anything is built.
    with pytest.raises(ModelError, match="colour"):
        get_tiny_model(name, colour="red")


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ModelError, match="valid: .*lavt_effnet_minilm"):
        get_model("lavt_resnet9000")


@pytest.mark.parametrize("name", ["lavt_effnet_minilm", "lgce_effnet_minilm", "lgce_swin_base"])
def test_unknown_kwarg_lists_valid_ones(name: str) -> None:
    with pytest.raises(ModelError, match=r"unknown argument 'colour'.*valid: .*decoder_channels"):
        get_model(name, colour="red")


def test_registry_lists_every_model_explicitly() -> None:
    # One dict names every model of the package: nothing is added by importing other modules.
    assert set(MODELS) == {
        "lavt_swin_base",
        "lgce_swin_base",
        "lavt_effnet_minilm",
        "lgce_effnet_minilm",
        "lavt_effnet2_minilm",
        "lgce_effnet2_minilm",
        "rrn_effnet_minilm",
        "cmsa_effnet_minilm",
        "rrn_swin_base",
        "cmsa_swin_base",
        "rmsin_swin_base",
        "rmsin_effnet_minilm",
    }
    assert list_models() == sorted(MODELS)
    assert all(entry.description for entry in MODELS.values())


def test_register_model_adds_a_user_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "MODELS", dict(MODELS))

    def my_net(decoder_channels: int = 8, **unused) -> RRSISModel:
        return get_tiny_model("lavt_effnet_minilm", decoder_channels=decoder_channels)

    register_model("my_net", my_net, {"decoder_channels": 4}, "a user's model")
    assert "my_net" in list_models()
    model = get_tiny_model("my_net")
    assert model.config == {"name": "my_net", "kwargs": {"decoder_channels": 4}}
    register_model("my_net", my_net)  # the same factory again is harmless
    with pytest.raises(ModelError, match="already registered"):
        register_model("my_net", lambda: None)
    with pytest.raises(ModelError, match="already registered"):
        register_model("lavt_swin_base", my_net)


def test_lite2_variant_is_recorded() -> None:
    model = get_tiny_model("lavt_effnet2_minilm")
    assert model.config["kwargs"]["variant"] == "lite2"
    assert model.vision.variant == "lite2"


def test_channels_last_gives_same_logits() -> None:
    model = get_tiny_model("lgce_effnet_minilm").eval()
    image, word_ids, word_mask = _inputs(model)
    with torch.no_grad():
        reference = model(image, word_ids, word_mask)
        model = model.to(memory_format=torch.channels_last)
        result = model(image.contiguous(memory_format=torch.channels_last), word_ids, word_mask)
    torch.testing.assert_close(result, reference, atol=1e-4, rtol=1e-4)


def test_padding_words_are_ignored() -> None:
    """Changing the ids of padded positions must not change the output."""
    model = get_tiny_model("lgce_effnet_minilm").eval()
    image, word_ids, word_mask = _inputs(model)
    noisy = word_ids.clone()
    noisy[word_mask == 0] = 1234
    with torch.no_grad():
        torch.testing.assert_close(
            model(image, noisy, word_mask), model(image, word_ids, word_mask)
        )


def test_all_padding_mask_is_refused() -> None:
    model = get_tiny_model("lavt_effnet_minilm")
    image, word_ids, word_mask = _inputs(model)
    with pytest.raises(ModelError, match="at least one token"):
        model(image, word_ids, torch.zeros_like(word_mask))


def test_cpu_preset_options_reach_the_modules_and_round_trip(tmp_path) -> None:
    from rrsis.models.io import load_model, save_model

    model = get_tiny_model("lgce_effnet_minilm", coord_features=True, lgce_init_scale=0.1)
    assert all(fusion.coord_embed is not None for fusion in model.fusions)
    assert all(torch.allclose(g, torch.full_like(g, 0.1)) for g in model.neck.gamma)
    assert model.config["kwargs"]["coord_features"] is True
    # The options are part of the recorded config: a saved model rebuilds with them.
    save_model(model, tmp_path / "m.safetensors")
    again = load_model(tmp_path / "m.safetensors")
    assert all(fusion.coord_embed is not None for fusion in again.fusions)
    # Off by default: the paper's PWAM and a zero-initialised LGCE.
    plain = get_tiny_model("lgce_effnet_minilm")
    assert all(fusion.coord_embed is None for fusion in plain.fusions)
    assert all(not g.any() for g in plain.neck.gamma)
