"""Test-time adaptation of batch-norm statistics to new imagery (AdaBN, Li et al. 2016).

A model trained on one city meets another city's colours, textures and light. Its batch-norm
layers still normalise with the *training* imagery's feature means and variances. AdaBN
re-estimates those statistics on the new imagery, with no labels and no gradient step: the
weights stay as trained, only the ``running_mean`` / ``running_var`` buffers change.

This makes most sense over many images of one domain, e.g. all the windows of a scene
(``rrsis predict-scene --adapt``) or all the crops of a tile. A single small image gives poor
estimates.

Usage::

    stats = adapt_batchnorm(model, batches)   # batches: iterable of (images, word_ids, word_mask)
    ...                                       # predict with the adapted model
    restore_batchnorm(model, stats)           # back to the trained statistics
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["ADAPT_SCOPES", "adapt_batchnorm", "batchnorm_layers", "restore_batchnorm"]

#: Which batch-norm layers :func:`adapt_batchnorm` re-estimates: the image encoder's only, or all.
ADAPT_SCOPES: tuple[str, ...] = ("vision", "all")

BNState = dict[str, tuple[Tensor, Tensor]]


def batchnorm_layers(model: nn.Module, scope: str = "all") -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers with running statistics in ``scope`` (see :data:`ADAPT_SCOPES`)."""
    if scope not in ADAPT_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(ADAPT_SCOPES)}, got {scope!r}")
    layers = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        if not module.track_running_stats or module.running_mean is None:
            continue
        if scope == "vision" and not name.startswith("vision."):
            continue
        layers[name] = module
    return layers


def _snapshot(layers: dict[str, nn.modules.batchnorm._BatchNorm]) -> BNState:
    return {
        name: (bn.running_mean.detach().clone(), bn.running_var.detach().clone())
        for name, bn in layers.items()
    }


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    scope: str = "all",
    blend: float = 1.0,
) -> BNState:
    """Re-estimate batch-norm statistics on ``batches`` in place; return the old ones.

    Each layer's new statistics are the average over all batches (cumulative moving average,
    so every batch counts the same), blended with the trained ones:
    ``blend * new + (1 - blend) * trained``. Everything else in the model is untouched, and it
    is left in eval mode.

    Args:
        model: a model whose forward takes ``(images, word_ids, word_mask)``; the images
            already normalised at the model's input size.
        batches: iterable of ``(images, word_ids, word_mask)`` tensors on the model's device.
            Language-fused models see the expressions too, so pass the ones you will predict.
        scope: ``"vision"`` (the image encoder's layers) or ``"all"`` (also neck and decoder).
        blend: weight of the new statistics in ``[0, 1]``.

    Returns:
        The trained statistics, for :func:`restore_batchnorm`.

    Raises:
        ValueError: unknown scope, ``blend`` outside ``[0, 1]``, or no batch given.
    """
    if not 0.0 <= blend <= 1.0:
        raise ValueError(f"blend must be in [0, 1], got {blend}")
    layers = batchnorm_layers(model, scope)
    saved = _snapshot(layers)
    momenta = {name: bn.momentum for name, bn in layers.items()}
    model.eval()
    for bn in layers.values():
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: every batch weighs the same
        bn.train()
    seen = 0
    try:
        for images, word_ids, word_mask in batches:
            model(images, word_ids, word_mask)
            seen += 1
    except BaseException:
        restore_batchnorm(model, saved)
        raise
    finally:
        for name, bn in layers.items():
            bn.momentum = momenta[name]
        model.eval()
    if seen == 0:
        restore_batchnorm(model, saved)
        raise ValueError("adapt_batchnorm needs at least one batch")
    for name, bn in layers.items():
        old_mean, old_var = saved[name]
        bn.running_mean.mul_(blend).add_(old_mean, alpha=1.0 - blend)
        bn.running_var.mul_(blend).add_(old_var, alpha=1.0 - blend)
    return saved


@torch.no_grad()
def restore_batchnorm(model: nn.Module, state: BNState) -> None:
    """Put back the statistics returned by :func:`adapt_batchnorm`."""
    modules = dict(model.named_modules())
    for name, (mean, var) in state.items():
        bn = modules[name]
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
