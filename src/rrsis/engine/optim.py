"""Optimiser parameter groups and the per-iteration poly schedule.

LAVT's recipe: AdamW with weight decay on weights only, none on normalisation layers and on
Swin's relative position bias tables; the learning rate follows ``(1 - it / total) ** 0.9``
updated every iteration. Only trainable parameters reach the optimiser, so a frozen text
encoder costs no optimiser memory.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from rrsis.models.encoders.base import TextEncoder, VisionEncoder

# Parameter-name fragments that never get weight decay besides biases and norm weights.
NO_DECAY_KEYS = ("relative_position_bias_table", "absolute_pos_embed", "position_embedding")


def _pretrained_prefixes(model: nn.Module) -> list[str]:
    """Name prefixes (``"vision."``) of the encoder sub-modules that carry pretrained weights."""
    prefixes = []
    for name, module in model.named_modules():
        if name and isinstance(module, (VisionEncoder, TextEncoder)):
            if not any(name.startswith(p) for p in prefixes):
                prefixes.append(name + ".")
    return prefixes


def _is_no_decay(name: str, param: nn.Parameter, norm_params: set[int]) -> bool:
    return (
        param.ndim <= 1
        or id(param) in norm_params
        or name.endswith(".bias")
        or any(key in name for key in NO_DECAY_KEYS)
    )


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    pretrained_lr_scale: float = 1.0,
) -> list[dict]:
    """Split trainable parameters into AdamW groups.

    Args:
        model: the network; sub-modules that are ``VisionEncoder`` / ``TextEncoder`` count as
            pretrained and get ``lr * pretrained_lr_scale``.
        lr: learning rate of the other (new) layers.
        weight_decay: decay of weight matrices and convolution kernels.
        pretrained_lr_scale: learning-rate multiplier of the pretrained encoders.

    Returns:
        Up to four non-empty groups ``{"params", "lr", "weight_decay", "name"}``.
    """
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(False)
    }
    prefixes = _pretrained_prefixes(model)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        pretrained = any(name.startswith(p) for p in prefixes)
        key = (pretrained, _is_no_decay(name, param, norm_params))
        groups.setdefault(key, []).append(param)
    result = []
    for (pretrained, no_decay), params in sorted(groups.items()):
        result.append(
            {
                "params": params,
                "lr": lr * (pretrained_lr_scale if pretrained else 1.0),
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{'pretrained' if pretrained else 'new'}_{'no_decay' if no_decay else 'decay'}",
            }
        )
    return result


def poly_lambda(total_steps: int, power: float = 0.9):
    """Multiplier ``(1 - step / total) ** power`` for ``torch.optim.lr_scheduler.LambdaLR``."""
    total = max(1, int(total_steps))

    def factor(step: int) -> float:
        return max(0.0, 1.0 - min(step, total) / total) ** power

    return factor


def build_optimizer(
    groups: Iterable[dict], total_steps: int, power: float = 0.9
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``groups`` and its poly schedule (step the scheduler every iteration)."""
    optimizer = torch.optim.AdamW(list(groups))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(total_steps, power))
    return optimizer, scheduler
