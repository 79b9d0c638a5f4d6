"""Tests of the re-implemented natural-image baselines (RRN, CMSA) at tiny random sizes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rrsis.errors import ModelError
from rrsis.models import io
from rrsis.models.baselines.cmsa import CrossModalSelfAttention, GatedMultiLevelFusion
from rrsis.models.baselines.common import (
    l2_normalize,
    masked_mean,
    spatial_coordinates,
    trim_padding,
)
from rrsis.models.baselines.rrn import SentenceLSTM
from rrsis.models.registry import MODELS, get_model, get_tiny_model, list_models

NAMES = sorted(
    name
    for name, entry in MODELS.items()
    if entry.factory.__module__.startswith("rrsis.models.baselines.")
)
TEXTS = ["the long truck on the left", "building"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _inputs(model, texts=TEXTS, size: int = 64):
    word_ids, word_mask = model.tokenize(list(texts))
    image = torch.randn(len(texts), 3, size, size, generator=torch.Generator().manual_seed(1))
    return image, word_ids, word_mask


# --- shared helpers ----------------------------------------------------------------------------


def test_spatial_coordinates_layout() -> None:
    coords = spatial_coordinates(3, 4)
    assert coords.shape == (1, 8, 3, 4)
    x_min, x_ctr, x_max, y_min, y_ctr, y_max, inv_w, inv_h = coords[0]
    # x varies along columns only, y along rows only; the grid spans [-1, 1] exactly.
    assert torch.allclose(x_min[0], torch.tensor([-1.0, -0.5, 0.0, 0.5]))
    assert torch.allclose(x_max[:, -1], torch.ones(3))
    assert torch.allclose(x_ctr, (x_min + x_max) / 2)
    assert torch.equal(x_min[0], x_min[2])
    assert torch.allclose(y_min[:, 0], torch.tensor([-1.0, -1 / 3, 1 / 3]))
    assert torch.allclose(y_max[-1], torch.ones(4))
    assert torch.allclose(y_ctr, (y_min + y_max) / 2)
    assert torch.allclose(inv_w, torch.full((3, 4), 0.25))
    assert torch.allclose(inv_h, torch.full((3, 4), 1 / 3))


def test_masked_mean_and_trim_ignore_padding() -> None:
    words = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [-50.0], [7.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.allclose(masked_mean(words, mask), torch.tensor([[2.0], [2.0]]))
    assert torch.equal(masked_mean(words, torch.zeros_like(mask)), torch.zeros(2, 1))
    trimmed, trimmed_mask = trim_padding(words, mask)
    assert trimmed.shape == (2, 2, 1) and torch.equal(trimmed_mask, mask[:, :2])


def test_sentence_lstm_reads_last_real_word() -> None:
    lstm = SentenceLSTM(4, 5)
    words = torch.randn(1, 6, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    expected = lstm(words[:, :3], torch.ones(1, 3, dtype=torch.long))
    assert torch.allclose(lstm(words, mask), expected, atol=1e-6)
    # Changing padded words must not matter; changing a real one must.
    noisy = words.clone()
    noisy[:, 3:] = torch.randn(1, 3, 4)
    assert torch.allclose(lstm(noisy, mask), expected, atol=1e-6)
    noisy[:, 1] += 1
    assert not torch.allclose(lstm(noisy, mask), expected, atol=1e-4)


def test_cross_modal_attention_matches_explicit_concatenation() -> None:
    """The broadcast-sum projections equal attention over materialised f_pn = [v_p, w_n, s_p]."""
    cv, cl, dk, dv = 5, 6, 4, 3
    attention = CrossModalSelfAttention(cv, cl, dk, dv, key_pool=1).eval()
    visual = torch.randn(2, cv, 3, 4)
    coords = spatial_coordinates(3, 4)
    words = torch.randn(2, 3, cl)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    got = attention(visual, coords, words, mask)

    b, p, n = 2, 12, 3
    v = l2_normalize(visual, 1).flatten(2).transpose(1, 2)  # (B, P, Cv)
    w = l2_normalize(words, 2)
    s = coords.flatten(2).transpose(1, 2).expand(b, p, 8)
    f = torch.cat(
        [
            v[:, None].expand(b, n, p, cv),
            w[:, :, None].expand(b, n, p, cl),
            s[:, None].expand(b, n, p, 8),
        ],
        dim=-1,
    ).reshape(b, n * p, -1)
    wp = attention.pixel_proj.weight[:, :, 0, 0]
    weight = torch.cat([wp[:, :cv], attention.word_proj.weight, wp[:, cv:]], dim=1)
    q, k, val, res = (f @ weight.T + attention.pixel_proj.bias).split([dk, dk, dv, dv], -1)
    scores = q @ k.transpose(1, 2) / math.sqrt(dk)
    key_valid = mask.bool().repeat_interleave(p, dim=1)[:, None, :]
    scores = scores.masked_fill(~key_valid, float("-inf"))
    out = attention.out_proj(scores.softmax(-1) @ val) + res  # (B, N*P, dv)
    out = out.view(b, n, p, dv)
    expected = torch.stack(
        [out[i, : int(mask[i].sum())].mean(0) for i in range(b)]
    )  # average over real words
    expected = expected.transpose(1, 2).reshape(b, dv, 3, 4)
    assert torch.allclose(got, expected, atol=1e-5)


def test_cross_modal_attention_pools_odd_maps() -> None:
    torch.manual_seed(0)
    attention = CrossModalSelfAttention(5, 6, 4, 3, key_pool=2).eval()
    visual, words = torch.randn(1, 5, 3, 5), torch.randn(1, 2, 6)
    coords, word_mask = spatial_coordinates(3, 5), torch.ones(1, 2)
    with torch.no_grad():
        out = attention(visual, coords, words, word_mask)
        assert out.shape == (1, 3, 3, 5) and torch.isfinite(out).all()
        # The odd last row/column still feeds the pooled keys (ceil mode): changing it changes
        # what the other pixels attend to.
        edge = visual.clone()
        edge[:, :, -1, :] += 3.0
        edge[:, :, :, -1] += 3.0
        moved = attention(edge, coords, words, word_mask)
    assert (moved[..., :2, :4] - out[..., :2, :4]).abs().max() > 1e-4


def test_gated_fusion_mixes_levels() -> None:
    fusion = GatedMultiLevelFusion(4, 3)
    levels = [torch.randn(1, 4, 5, 5) for _ in range(3)]
    base = fusion(levels)
    assert base.shape == (1, 4, 5, 5)
    # Every level reaches the output through the messages, not only its own term.
    changed = [levels[0], levels[1], levels[2] + 1]
    assert not torch.allclose(fusion(changed), base)


# --- every registered baseline ----------------------------------------------------------------


def test_baselines_are_registered() -> None:
    assert set(NAMES) <= set(list_models())
    assert set(NAMES) == {
        "rrn_effnet_minilm",
        "cmsa_effnet_minilm",
        "rrn_swin_base",
        "cmsa_swin_base",
    }


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name: str) -> None:
    model = get_tiny_model(name).train()
    image, word_ids, word_mask = _inputs(model)
    logits = model(image, word_ids, word_mask)
    assert logits.shape == (2, 2, 64, 64)
    F.cross_entropy(logits, (image[:, 0] > 0).long()).backward()
    head_params = list(model.head.parameters())
    assert head_params and all(p.grad is not None for p in head_params)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vision.parameters())
    if model.text.frozen:
        assert all(p.grad is None for p in model.text.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_output_depends_on_text_and_ignores_padding(name: str) -> None:
    model = get_tiny_model(name).eval()
    image, word_ids, word_mask = _inputs(model, ["car", "car"])
    other_ids, other_mask = model.tokenize(["car", "building along the road"])
    with torch.no_grad():
        same = model(image, word_ids, word_mask)
        other = model(image, other_ids, other_mask)
        noisy_ids = torch.where(
            word_mask.bool(), word_ids, torch.randint_like(word_ids, 1000, 2000)
        )
        noisy = model(image, noisy_ids, word_mask)
    assert torch.allclose(same[0], other[0], atol=1e-5)  # row 0 has the same text in both
    assert (same[1] - other[1]).abs().max() > 1e-5
    assert torch.allclose(same, noisy, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_prediction_does_not_depend_on_batch_mates(name: str) -> None:
    # CMSA trims the batch's common padding tail: a short expression batched with a long one
    # must get the same result as alone.
    model = get_tiny_model(name).eval()
    image, word_ids, word_mask = _inputs(model)
    with torch.no_grad():
        batched = model(image, word_ids, word_mask)
        alone = model(image[1:], word_ids[1:], word_mask[1:])
    assert torch.allclose(batched[1:], alone, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_spatial_coordinates_are_used(name: str) -> None:
    model = get_tiny_model(name).eval()
    image, word_ids, word_mask = _inputs(model)
    with torch.no_grad():
        with_coords = model(image, word_ids, word_mask)
        model.use_coords = False
        without = model(image, word_ids, word_mask)
        model.use_coords = True
        again = model(image, word_ids, word_mask)
    assert (with_coords - without).abs().max() > 1e-5
    assert torch.equal(with_coords, again)
    assert not get_tiny_model(name, use_coords=False).use_coords


@pytest.mark.parametrize("name", NAMES)
def test_config_rebuilds_the_architecture(name: str) -> None:
    model = get_tiny_model(name)
    rebuilt = get_model(model.config["name"], **model.config["kwargs"])
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name: str, tmp_path) -> None:
    model = get_tiny_model(name).eval()
    image, word_ids, word_mask = _inputs(model)
    path = tmp_path / f"{name}.safetensors"
    io.save_model(model, path)
    loaded = io.load_model(path).eval()
    with torch.no_grad():
        assert torch.allclose(model(image, word_ids, word_mask), loaded(image, word_ids, word_mask))


def test_user_mistakes_raise_model_errors() -> None:
    model = get_tiny_model("cmsa_effnet_minilm")
    image, word_ids, word_mask = _inputs(model)
    with pytest.raises(ModelError, match="multiples of 32"):
        model(image[..., :48], word_ids, word_mask)
    with pytest.raises(ModelError, match="at least one token"):
        model(image, word_ids, torch.zeros_like(word_mask))
    with pytest.raises(ModelError, match="grid_level"):
        get_tiny_model("cmsa_effnet_minilm", grid_level=7)
    with pytest.raises(ModelError, match="refine_levels"):
        get_tiny_model("rrn_effnet_minilm", refine_levels=0)
    with pytest.raises(ModelError, match="unknown argument"):
        get_tiny_model("rrn_effnet_minilm", attention_heads=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rrn_effnet_minilm", "cmsa_effnet_minilm"])
def test_learns_a_target_that_needs_text_and_position(name: str) -> None:
    """One image, "left" vs "right": only text x spatial-coordinate interplay can fit both masks."""
    model = get_tiny_model(name).train()
    word_ids, word_mask = model.tokenize(["the object on the left", "the object on the right"])
    image = torch.randn(1, 3, 64, 64).expand(2, -1, -1, -1).contiguous()
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[0, :, :32] = 1
    target[1, :, 32:] = 1
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(100):
        loss = F.cross_entropy(model(image, word_ids, word_mask), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Still in training mode: BatchNorm running statistics of 100 steps on one image are not
    # what is being tested, the capacity to fit is.
    with torch.no_grad():
        accuracy = (model(image, word_ids, word_mask).argmax(1) == target).float().mean()
    assert accuracy > 0.9, f"pixel accuracy {accuracy:.3f} after 100 steps (chance: 0.5)"
