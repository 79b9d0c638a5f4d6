"""Segmentation loss of LAVT / LGCE: 2-class cross-entropy with class weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy over (background, foreground) logits with fixed class weights.

    The paper uses weights ``[0.9, 1.1]``: referred objects are usually a small part of the
    image, so foreground pixels count slightly more.

    Args:
        class_weights: weight of class 0 (background) and class 1 (foreground).
    """

    def __init__(self, class_weights: tuple[float, float] = (0.9, 1.1)) -> None:
        super().__init__()
        # A buffer so the weights follow the module to the training device.
        self.register_buffer("weight", torch.tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean weighted cross-entropy.

        Args:
            logits: ``(B, 2, H, W)`` raw scores.
            target: ``(B, H, W)`` bool or integer mask (1 = referred object). A target of
                another size is resized (nearest) to the logits.

        Returns:
            Scalar loss.
        """
        target = target.long()
        if target.shape[-2:] != logits.shape[-2:]:
            target = F.interpolate(target[:, None].float(), size=logits.shape[-2:], mode="nearest")
            target = target[:, 0].long()
        return F.cross_entropy(logits.float(), target, weight=self.weight)
