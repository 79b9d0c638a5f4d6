"""PWAM, language gate and decoder behaviour."""

from __future__ import annotations

import torch

from rrsis.models.decoders import LAVTDecoder
from rrsis.models.fusion import LanguageGate, PixelWordAttention, SpatialPrior, coordinate_grid


def test_pwam_shape_and_padding_is_masked() -> None:
    torch.manual_seed(0)
    pwam = PixelWordAttention(8, 6).eval()
    visual = torch.randn(2, 8, 5, 7)
    words = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    out = pwam(visual, words, mask)
    assert out.shape == visual.shape
    changed = words.clone()
    changed[0, 2:] = 50.0
    torch.testing.assert_close(pwam(visual, changed, mask), out)
    changed[0, 0] = 50.0  # a real word: output must change
    assert not torch.allclose(pwam(visual, changed, mask)[0], out[0])


def test_pwam_matches_explicit_attention() -> None:
    """The SDPA path equals a hand-written masked softmax attention."""
    torch.manual_seed(0)
    pwam = PixelWordAttention(4, 3).eval()
    visual = torch.randn(1, 4, 2, 3)
    words = torch.randn(1, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    q = pwam.query(visual).flatten(2).transpose(1, 2)  # (1, 6, 4)
    k, v = pwam.key(words), pwam.value(words)
    logits = q @ k.transpose(1, 2) / 2.0  # sqrt(4)
    logits = logits.masked_fill(mask[:, None, :] == 0, float("-inf"))
    attended = (logits.softmax(-1) @ v).transpose(1, 2).reshape(1, 4, 2, 3)
    expected = pwam.project(pwam.visual_project(visual) * pwam.attended_out(attended))
    torch.testing.assert_close(pwam(visual, words, mask), expected)


def test_gate_is_bounded() -> None:
    gate = LanguageGate(4)
    out = gate(torch.randn(2, 4, 3, 3) * 100)
    assert out.shape == (2, 4, 3, 3) and out.abs().max() <= 1.0


def test_decoder_outputs_quarter_resolution() -> None:
    decoder = LAVTDecoder([4, 8, 16, 32], hidden=8)
    maps = [torch.randn(1, c, 16 // 2**i, 20 // 2**i) for i, c in enumerate([4, 8, 16, 32])]
    maps[3] = torch.randn(1, 32, 2, 3)
    assert decoder(maps).shape == (1, 2, 16, 20)


def test_coordinate_grid_spans_the_image() -> None:
    grid = coordinate_grid(2, 4, torch.zeros(1))
    assert grid.shape == (1, 2, 2, 4)
    torch.testing.assert_close(grid[0, 0, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # x
    torch.testing.assert_close(grid[0, 1, :, 0], torch.tensor([-0.5, 0.5]))  # y


def test_pwam_coordinate_features_start_as_plain_pwam_and_can_see_position() -> None:
    torch.manual_seed(0)
    plain = PixelWordAttention(8, 6).eval()
    coords = PixelWordAttention(8, 6, coord_features=True).eval()
    coords.load_state_dict(plain.state_dict(), strict=False)
    visual = torch.randn(1, 8, 1, 1).expand(1, 8, 4, 6).contiguous()  # the same at every pixel
    words, mask = torch.randn(1, 3, 6), torch.ones(1, 3, dtype=torch.long)
    # Zero-initialised embedding: identical to PWAM at start, so no pixel knows where it is.
    out = coords(visual, words, mask)
    torch.testing.assert_close(out, plain(visual, words, mask))
    torch.testing.assert_close(out[..., 0], out[..., -1])
    # Once the embedding has weights, left and right pixels of the same content differ.
    torch.nn.init.normal_(coords.coord_embed[2].weight)
    out = coords(visual, words, mask)
    assert not torch.allclose(out[..., 0], out[..., -1])
    # Coordinates are relative to the map: another size keeps working.
    assert coords(torch.randn(1, 8, 3, 5), words, mask).shape == (1, 8, 3, 5)


def test_spatial_prior_starts_at_zero_and_learns_a_region() -> None:
    torch.manual_seed(0)
    prior = SpatialPrior(text_dim=8, grid=6, hidden=16)
    words = torch.randn(2, 3, 8)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(prior(words, mask, (12, 12)), torch.zeros(2, 1, 12, 12))
    # Padding does not change the sentence feature.
    padded = words.clone()
    padded[0, 2] = 100.0
    opt = torch.optim.Adam(prior.parameters(), lr=0.05)
    # Sentence 0 means "left", sentence 1 means "right": fit offsets +-1 on the image halves.
    target = torch.zeros(2, 1, 12, 12)
    target[0, :, :, :6], target[0, :, :, 6:] = 1.0, -1.0
    target[1] = -target[0]
    for _ in range(200):
        loss = (prior(words, mask, (12, 12)) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = prior(words, mask, (12, 12))
    assert out[0, 0, :, :4].mean() > 0.5 > -0.5 > out[0, 0, :, 8:].mean()
    assert out[1, 0, :, :4].mean() < -0.5 < 0.5 < out[1, 0, :, 8:].mean()
    torch.testing.assert_close(prior(padded, mask, (12, 12)), out)
