"""torch.compile on the paper models: one graph (no breaks), and compiled outputs equal eager."""

from __future__ import annotations

import pytest
import torch

from rrsis.models.encoders import swin_windows as swin_module
from rrsis.models.registry import get_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

EXPRESSIONS = ["the long building along the road", "water"]


def _inputs(model, batch: int = 2, size: int = 64):
    ids, mask = model.tokenize(EXPRESSIONS[:batch])
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, size, size, generator=generator), ids, mask


def test_lavt_traces_as_one_graph() -> None:
    """fullgraph=True fails on any graph break (input checks, mask caches, window orders)."""
    torch._dynamo.reset()
    model = get_tiny_model("lavt_swin_base").eval()
    image, ids, mask = _inputs(model)
    with torch.no_grad():
        expected = model(image, ids, mask)
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(image, ids, mask), expected)


def test_window_tensors_are_built_on_the_device_once() -> None:
    swin_module.window_order.cache_clear()
    swin_module.shift_mask.cache_clear()
    device = torch.device("cpu")
    first = swin_module.window_tensors(7, 9, 3, 1, device)
    second = swin_module.window_tensors(7, 9, 3, 1, device)
    assert all(a is b for a, b in zip(first, second))  # cached: no rebuild, no copy
    gather, scatter, mask = first
    assert gather.device == scatter.device == mask.device == device
    assert mask.shape == (9, 9, 9)  # 9x9 padded map, 3x3 windows of 9 tokens
    # The cached tensors are the in-graph ones (what torch.compile builds).
    hp = wp = 9
    torch.testing.assert_close(mask, swin_module._build_shift_mask(hp, wp, 3, 1, device))
    assert torch.equal(gather, swin_module._build_window_order(7, 9, 3, 1, device)[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lavt_swin_base", "lgce_swin_base"])
def test_inductor_matches_eager(name: str) -> None:
    """Inductor (the default backend) compiles inference and training; outputs agree."""
    torch._dynamo.reset()
    model = get_tiny_model(name).eval()
    image, ids, mask = _inputs(model)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(image, ids, mask), model(image, ids, mask), atol=1e-4, rtol=1e-4
        )
    model.train()
    torch.manual_seed(0)
    # Eager's random numbers in the compiled graph too (stochastic depth, dropout).
    with torch._inductor.config.patch(fallback_random=True):
        compiled(image, ids, mask).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.manual_seed(0)
    model(image, ids, mask).square().mean().backward()
    for name_, param in model.named_parameters():
        if name_ in grads:
            torch.testing.assert_close(grads[name_], param.grad, atol=1e-4, rtol=1e-3)
