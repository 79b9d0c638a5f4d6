"""Segmentation losses: LAVT / LGCE's 2-class weighted cross-entropy, plus an optional soft Dice term.

The paper trains with cross-entropy only. Cross-entropy counts pixels, so a small object
contributes little to the loss while it counts as much as a large one in mIoU; a per-sample
soft Dice term (Milletari et al. 2016) weighs every sample equally. ``dice_weight=0`` is the
paper's loss.
"""

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


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """Mean over samples of ``1 - soft Dice`` of the foreground probability.

    Args:
        logits: ``(B, 2, H, W)`` raw scores.
        target: ``(B, H, W)`` bool or integer mask, the size of ``logits``.
        smooth: added to numerator and denominator (an empty target with an empty
            prediction scores 1, not 0/0).

    Returns:
        Scalar loss in ``[0, 1]``.
    """
    prob = logits.float().softmax(1)[:, 1].flatten(1)
    target = target.float().flatten(1)
    inter = (prob * target).sum(1)
    dice = (2 * inter + smooth) / (prob.sum(1) + target.sum(1) + smooth)
    return (1 - dice).mean()


class SegmentationLoss(WeightedCrossEntropy):
    """Weighted cross-entropy ``+ dice_weight *`` :func:`soft_dice_loss`.

    Args:
        class_weights: cross-entropy weights of (background, foreground).
        dice_weight: weight of the Dice term (0 = cross-entropy only, as in the paper).
    """

    def __init__(
        self, class_weights: tuple[float, float] = (0.9, 1.1), dice_weight: float = 0.0
    ) -> None:
        super().__init__(class_weights)
        self.dice_weight = float(dice_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Scalar loss; ``target`` of another size is resized (nearest) to the logits."""
        if target.shape[-2:] != logits.shape[-2:]:
            target = F.interpolate(target[:, None].float(), size=logits.shape[-2:], mode="nearest")
            target = target[:, 0]
        loss = super().forward(logits, target)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target)
        return loss
