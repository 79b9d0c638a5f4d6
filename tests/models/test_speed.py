"""Inference helpers: eval/autograd handling, channels-last, bf16 agreement with fp32."""

from __future__ import annotations

import pytest
import torch

from rrsis.errors import ModelError
from rrsis.models import registry
from rrsis.models.encoders.swin import SwinEncoder
from rrsis.models.speed import (
    channels_last,
    fuse_for_inference,
    inference_mode,
    mask_agreement,
    predict_logits,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mask_agreement_hand_computed() -> None:
    a = torch.zeros(1, 2, 2, 2)
    b = torch.zeros(1, 2, 2, 2)
    a[0, 1] = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # classes [[1, 1], [0, 0]]
    b[0, 1] = torch.tensor([[1.0, -1.0], [-1.0, -1.0]])  # classes [[1, 0], [0, 0]]
    assert mask_agreement(a, b) == pytest.approx(0.75)
    assert mask_agreement(a, a) == 1.0
    with pytest.raises(ModelError, match="shapes differ"):
        mask_agreement(a, b[..., :1])


def test_inference_mode_restores_training_and_disables_autograd() -> None:
    encoder = SwinEncoder(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2)
    encoder.train()
    with inference_mode(encoder) as fast:
        assert not fast.training
        maps = fast(torch.randn(1, 3, 64, 64))
        assert not torch.is_grad_enabled()
        assert maps[0].dtype == torch.float32
    assert encoder.training
    assert encoder.patch_embed.proj.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ModelError, match="dtype"):
        with inference_mode(encoder, dtype="fp16"):
            pass


def test_channels_last_is_layout_only() -> None:
    image = torch.randn(2, 3, 8, 8)
    fast = channels_last(image)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(fast, image)


def test_bf16_encoder_close_to_fp32() -> None:
    torch.manual_seed(0)
    encoder = SwinEncoder(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=3)
    image = torch.randn(1, 3, 96, 96)
    with inference_mode(encoder) as fast:
        exact = fast(image)
    with inference_mode(encoder, dtype="bf16") as fast:
        approx = fast(channels_last(image))
    for a, b in zip(exact, approx):
        assert b.dtype in (torch.bfloat16, torch.float32)
        error = (a - b.float()).norm() / a.norm()
        assert error < 0.05  # bf16 keeps ~3 significant digits; fp32 norms/softmax bound drift
        assert error > 0  # bf16 was actually used


def test_bf16_masks_agree_with_fp32_on_tiny_lavt() -> None:
    torch.manual_seed(0)
    model = registry.get_tiny_model("lavt_swin_base")
    word_ids, word_mask = model.tokenize(["the large building left of the road", "a red car"])
    image = torch.randn(2, 3, model.input_size, model.input_size)
    exact = predict_logits(model, image, word_ids, word_mask)
    fast = predict_logits(model, image, word_ids, word_mask, dtype="bf16")
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert not torch.equal(exact, fast)
    assert mask_agreement(exact, fast) >= 0.99
    # Keeping the weights in bf16 makes the casts autocast would make: same logits.
    cast = predict_logits(model, image, word_ids, word_mask, dtype="bf16", cast_weights=True)
    torch.testing.assert_close(cast, fast, atol=1e-3, rtol=1e-3)
    assert model.vision.layers[0].blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert model.vision.norm0.weight.dtype == torch.float32
    with pytest.raises(ModelError, match="reload"):
        predict_logits(model, image, word_ids, word_mask)


def _randomise_norms(model: torch.nn.Module) -> None:
    """Non-trivial running statistics and affine parameters (a fresh norm folds to ~identity)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.randn(n, generator=generator))
                module.bias.copy_(torch.randn(n, generator=generator))


def test_fuse_for_inference_folds_every_norm_of_the_default_architecture() -> None:
    torch.manual_seed(0)
    model = registry.get_tiny_model("lgce_effnet_minilm").eval()
    _randomise_norms(model)
    n_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert n_norms > 10
    word_ids, word_mask = model.tokenize(["the building along the road", "water"])
    size = model.input_size
    example = (torch.randn(1, 3, size, size), word_ids[:1], word_mask[:1])
    image = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        before = model(image, word_ids, word_mask)
    counts = fuse_for_inference(model, example)
    assert counts["batch_norms"] == n_norms
    assert counts["activations"] > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.inference_mode():
        after = model(image, word_ids, word_mask)  # other images and texts than the example
    assert not torch.equal(before, after)  # the arithmetic changed ...
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)  # ... the function did not


class _ResidualNorm(torch.nn.Module):
    """``bn(conv(x)) + conv(x)``: folding the norm into the conv would change the residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


def test_fuse_for_inference_undoes_everything_when_the_output_changes() -> None:
    torch.manual_seed(0)
    model = _ResidualNorm().eval()
    _randomise_norms(model)
    x = torch.randn(1, 3, 8, 8)
    with torch.inference_mode():
        before = model(x)
    weight = model.conv.weight.clone()
    assert fuse_for_inference(model, (x,)) == {"batch_norms": 0, "activations": 0}
    assert isinstance(model.norm, torch.nn.BatchNorm2d)
    assert torch.equal(model.conv.weight, weight)
    with torch.inference_mode():
        assert torch.equal(model(x), before)


def test_fuse_for_inference_skips_shared_norms_and_refuses_training_mode() -> None:
    conv_a, conv_b = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 1)
    shared = torch.nn.BatchNorm2d(4)

    class Shared(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.norm = conv_a, conv_b, shared

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.a(x)) + self.norm(self.b(x))

    model = Shared()
    _randomise_norms(model)
    with pytest.raises(ModelError, match="eval mode"):
        fuse_for_inference(model, (torch.randn(1, 3, 4, 4),))
    model.eval()
    assert fuse_for_inference(model, (torch.randn(1, 3, 4, 4),))["batch_norms"] == 0
    assert model.norm is shared


def test_fuse_for_inference_undoes_a_rewrite_the_model_rejects() -> None:
    class Picky(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)
            self.norm = torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not isinstance(self.norm, torch.nn.BatchNorm2d):
                raise TypeError("this model needs its norm")
            return self.norm(self.conv(x))

    model = Picky().eval()
    _randomise_norms(model)
    x = torch.randn(1, 3, 4, 4)
    assert fuse_for_inference(model, (x,)) == {"batch_norms": 0, "activations": 0}
    assert isinstance(model.norm, torch.nn.BatchNorm2d)
    with torch.inference_mode():
        model(x)
