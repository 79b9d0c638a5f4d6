"""LGCE: identity at start, ablation switches change the output, masking of padded words."""

from __future__ import annotations

import pytest
import torch

from rrsis.models.lgce import LGCE, masked_mean

CHANNELS = [8, 12, 16, 20]
SIZES = [16, 8, 4, 2]


def _maps(batch: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, c, s, s) for c, s in zip(CHANNELS, SIZES)]


def _words(batch: int = 2):
    words = torch.randn(batch, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])[:batch]
    return words, mask


def test_masked_mean_ignores_padding() -> None:
    words, mask = _words()
    expected = words[0, :3].mean(0)
    torch.testing.assert_close(masked_mean(words, mask)[0], expected)


def test_zero_init_is_identity() -> None:
    torch.manual_seed(0)
    lgce = LGCE(CHANNELS, text_dim=6, dim=8).eval()
    maps = _maps()
    words, mask = _words()
    out = lgce(maps, words, mask)
    for before, after in zip(maps, out):
        torch.testing.assert_close(after, before)


def _run(**switches) -> list[torch.Tensor]:
    torch.manual_seed(0)
    lgce = LGCE(CHANNELS, text_dim=6, dim=8, init_scale=1.0, **switches).eval()
    torch.manual_seed(1)
    maps = _maps()
    words, mask = _words()
    with torch.no_grad():
        return lgce(maps, words, mask)


@pytest.mark.parametrize("switch", ["language_guidance", "deep_to_shallow", "shallow_to_deep"])
def test_each_switch_changes_the_output(switch: str) -> None:
    full = _run()
    ablated = _run(**{switch: False})
    assert any(not torch.allclose(a, b) for a, b in zip(full, ablated))


def test_deep_to_shallow_only_reaches_shallow_maps_from_deeper_ones() -> None:
    """With only deep->shallow, the deepest map receives nothing but itself."""
    torch.manual_seed(0)
    lgce = LGCE(CHANNELS, text_dim=6, dim=8, init_scale=1.0, shallow_to_deep=False).eval()
    maps = _maps()
    words, mask = _words()
    changed = [m.clone() for m in maps]
    changed[0] = torch.randn_like(changed[0])  # perturb the shallowest map only
    with torch.no_grad():
        a = lgce(maps, words, mask)
        b = lgce(changed, words, mask)
    torch.testing.assert_close(a[3], b[3])  # nothing flows up
    assert lgce.sources(0) == [0, 1, 2, 3] and lgce.sources(3) == [3]


def test_language_changes_enhancement_and_padding_does_not() -> None:
    torch.manual_seed(0)
    lgce = LGCE(CHANNELS, text_dim=6, dim=8, init_scale=1.0).eval()
    maps = _maps()
    words, mask = _words()
    with torch.no_grad():
        base = lgce(maps, words, mask)
        padded = words.clone()
        padded[0, 3:] = 100.0  # padded positions of sample 0
        same = lgce(maps, padded, mask)
        other = lgce(maps, torch.randn_like(words), mask)
    for a, b in zip(base, same):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(base[0], other[0])
    # Without language guidance the words play no role at all.
    lgce_nolang = LGCE(CHANNELS, text_dim=6, dim=8, init_scale=1.0, language_guidance=False)
    with torch.no_grad():
        x = lgce_nolang.eval()(maps, words, mask)
        y = lgce_nolang(maps, torch.randn_like(words), mask)
    for a, b in zip(x, y):
        torch.testing.assert_close(a, b)


def test_gradients_reach_gamma_at_zero_init() -> None:
    lgce = LGCE(CHANNELS, text_dim=6, dim=8)
    words, mask = _words()
    out = lgce(_maps(), words, mask)
    sum(o.square().sum() for o in out).backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in lgce.gamma)
