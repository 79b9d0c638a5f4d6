"""Swin encoder: shapes, window/shift semantics against transformers, weight loading."""

from __future__ import annotations

import pickle

import pytest
import torch
import transformers

from rrsis.errors import ModelError
from rrsis.models.encoders.swin import SwinEncoder
from rrsis.models.encoders.swin_weights import load_swin_weights
from rrsis.models.encoders.swin_windows import window_order

TINY = {"embed_dim": 8, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4), "drop_path_rate": 0.0}


pytestmark = pytest.mark.usefixtures("one_thread")


def _stages(encoder: SwinEncoder, image: torch.Tensor) -> list[torch.Tensor]:
    """Raw (un-normalised) stage outputs through the fusion interface, no fusion."""
    x = encoder.forward_stem(image)
    features = []
    for i in range(4):
        features.append(encoder.forward_stage(i, x))
        if i < 3:
            x = encoder.downsample(i, features[-1])
    return features


@pytest.mark.parametrize(("height", "width", "window"), [(64, 64, 2), (96, 64, 3), (64, 32, 5)])
def test_shapes_any_multiple_of_32(height: int, width: int, window: int) -> None:
    encoder = SwinEncoder(**TINY, window_size=window).eval()
    maps = encoder(torch.randn(2, 3, height, width))
    assert encoder.out_channels == [8, 16, 32, 64]
    for feature, channels, stride in zip(maps, encoder.out_channels, encoder.strides):
        assert feature.shape == (2, channels, height // stride, width // stride)
        assert torch.isfinite(feature).all()
        # NHWC memory under the NCHW view: the channels-last contract costs no copies.
        assert feature.is_contiguous(memory_format=torch.channels_last)


def test_window_order_round_trip() -> None:
    for h, w, window, shift in [(5, 7, 3, 1), (6, 6, 3, 0), (4, 9, 2, 1)]:
        gather, scatter = window_order(h, w, window, shift)
        hp, wp = h + (-h) % window, w + (-w) % window
        padded = torch.arange(hp * wp).view(hp, wp)
        # Each window holds a window x window block of the rolled map.
        rolled = torch.roll(padded, (-shift, -shift), (0, 1))
        assert torch.equal(padded.view(-1)[gather[: window * window]].view(window, window),
                           rolled[:window, :window])  # fmt: skip
        back = padded.view(-1)[gather][scatter].view(h, w)
        assert torch.equal(back, padded[:h, :w])


def test_shift_mask_blocks_wrapped_tokens() -> None:
    """A token changed at one border must not influence the opposite border through the roll."""
    encoder = SwinEncoder(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 1, 1), window_size=4)
    block = encoder.layers[0].blocks[1].eval()  # shifted block, shift 2, on an 8x8 map
    x = torch.randn(1, 8, 8, 8)
    changed = x.clone()
    changed[0, 0, 0] += 5.0  # top-left token; the roll wraps it next to the bottom-right ones
    with torch.no_grad():
        delta = (block(changed) - block(x)).abs().sum(-1)[0]
    assert delta[0, 0] > 0
    assert delta[6:, 6:].max() < 1e-3  # only the -100 mask's exp(-100) leakage remains
    assert delta[:4, :4].sum() > 0


def _tiny_transformers_swin(tmp_path, window: int = 3):
    torch.manual_seed(0)
    config = transformers.SwinConfig(
        image_size=128, embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
        window_size=window, drop_path_rate=0.0,
    )  # fmt: skip
    model = transformers.SwinModel(config).eval()
    with torch.no_grad():  # random norms and bias tables: default inits would hide mix-ups
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "hf")
    return model


def test_transformers_weights_give_identical_stage_outputs(tmp_path) -> None:
    reference = _tiny_transformers_swin(tmp_path)
    # 128 px with window 3: maps 32/16/8/4 are all padded and every stage has a shifted block.
    image = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        out = reference(
            image, output_hidden_states=True, output_hidden_states_before_downsampling=True
        )
    for source in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors"):
        ours = SwinEncoder(**TINY, window_size=3, pretrained=str(source)).eval()
        with torch.no_grad():
            features = _stages(ours, image)
            last = ours.output_norm(3, features[3])
        for mine, theirs in zip(features, out.reshaped_hidden_states[1:]):
            torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(last.flatten(2).transpose(1, 2), out.last_hidden_state,
                                   atol=1e-4, rtol=1e-4)  # fmt: skip


def _official_checkpoint(encoder: SwinEncoder) -> dict:
    """Our weights laid out like an official Swin classification checkpoint."""
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("norm")}
    state["norm.weight"] = torch.full((64,), 2.0)
    state["norm.bias"] = torch.zeros(64)
    state["head.weight"] = torch.zeros(10, 64)
    state["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(9, 9, dtype=torch.long)
    return {"model": state}


def test_official_checkpoint_with_window_interpolation(tmp_path) -> None:
    source = SwinEncoder(**TINY, window_size=3)
    table = source.layers[2].blocks[0].attn.relative_position_bias_table
    with torch.no_grad():
        table.fill_(0.7)  # bicubic resize of a constant table must stay constant
    path = tmp_path / "swin_official.pth"
    torch.save(_official_checkpoint(source), path)

    target = SwinEncoder(**TINY, window_size=5)
    untouched = load_swin_weights(target, path)
    assert sorted({k.split(".")[0] for k in untouched}) == ["norm0", "norm1", "norm2"]
    assert torch.equal(target.norm3.weight, torch.full((64,), 2.0))
    assert torch.equal(target.layers[1].blocks[1].mlp.fc1.weight,
                       source.layers[1].blocks[1].mlp.fc1.weight)  # fmt: skip
    resized = target.layers[2].blocks[0].attn.relative_position_bias_table
    assert resized.shape == (81, 2)
    torch.testing.assert_close(resized, torch.full((81, 2), 0.7))
    assert target(torch.randn(1, 3, 64, 64))[3].shape == (1, 64, 2, 2)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_weights_raise_model_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="not found"):
        SwinEncoder(**TINY, pretrained=str(tmp_path / "missing.pth"))
    deeper = SwinEncoder(**{**TINY, "depths": (2, 2, 4, 2)})
    torch.save(_official_checkpoint(deeper), tmp_path / "deeper.pth")
    with pytest.raises(ModelError, match="unexpected Swin weight"):
        SwinEncoder(**TINY, pretrained=str(tmp_path / "deeper.pth"))
    wider = SwinEncoder(**{**TINY, "embed_dim": 16})
    torch.save(_official_checkpoint(wider), tmp_path / "wider.pth")
    with pytest.raises(ModelError, match="shape"):
        SwinEncoder(**TINY, pretrained=str(tmp_path / "wider.pth"))

    class Payload:  # a pickle that would run code on load
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(ModelError, match="cannot read"):
        SwinEncoder(**TINY, pretrained=str(tmp_path / "evil.pth"))


def test_backward_and_drop_path() -> None:
    encoder = SwinEncoder(**{**TINY, "drop_path_rate": 0.5}, window_size=2)
    image = torch.randn(2, 3, 64, 64)
    sum(f.square().mean() for f in encoder(image)).backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None, name
    # Stochastic depth is random in training and off in eval.
    torch.manual_seed(1)
    first = encoder(image)[3]
    second = encoder(image)[3]
    assert not torch.allclose(first, second)
    encoder.eval()
    torch.testing.assert_close(encoder(image)[3], encoder(image)[3])


def test_inference_mask_cache_follows_weight_changes() -> None:
    encoder = SwinEncoder(**TINY, window_size=3).eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first = encoder(image)[3]
        torch.testing.assert_close(encoder(image)[3], first)  # served from the cache
        state = encoder.state_dict()
        state["layers.3.blocks.0.attn.relative_position_bias_table"] += 1.0
        state["layers.0.blocks.1.attn.relative_position_bias_table"] *= -5.0
        encoder.load_state_dict(state)
        changed = encoder(image)[3]
    fresh = SwinEncoder(**TINY, window_size=3).eval()
    fresh.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(changed, fresh(image)[3])
    assert not torch.allclose(changed, first)


def test_channels_last_input_gives_same_result() -> None:
    encoder = SwinEncoder(**TINY, window_size=2).eval()
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        plain = encoder(image)
        fast = encoder(image.contiguous(memory_format=torch.channels_last))
    for a, b in zip(plain, fast):
        torch.testing.assert_close(a, b)


def test_bad_configuration() -> None:
    with pytest.raises(ModelError, match="4 stages"):
        SwinEncoder(depths=(2, 2, 2), num_heads=(1, 1, 1))
    with pytest.raises(ModelError, match="divisible"):
        SwinEncoder(embed_dim=10, depths=(1, 1, 1, 1), num_heads=(3, 3, 3, 3))


def test_training_works_after_inference_mode() -> None:
    """Cached window orders / shift masks built under inference_mode must not poison training."""
    from rrsis.models.encoders import swin_windows

    swin_windows.shift_mask.cache_clear()
    swin_windows.window_order.cache_clear()
    encoder = SwinEncoder(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=2)
    image = torch.randn(1, 3, 64, 64)
    encoder.eval()
    with torch.inference_mode():
        encoder(image)
    encoder.train()
    loss = sum(f.sum() for f in encoder(image))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
