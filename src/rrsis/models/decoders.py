"""The LAVT decoder: top-down fusion of the four stage maps into 2-class logits at 1/4."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv_bn_relu(in_channels: int, out_channels: int, separable: bool) -> list[nn.Module]:
    if separable:
        # Depthwise 3x3 + pointwise 1x1: ~8x fewer FLOPs at 1/4 resolution for the CPU models.
        conv = [
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        ]
    else:
        conv = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)]
    return [*conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class LAVTDecoder(nn.Module):
    """``concat(up(F4), F3) -> convs -> concat(up, F2) -> convs -> concat(up, F1) -> convs -> 1x1``.

    Args:
        in_channels: channels of the stage maps ``[C1, C2, C3, C4]`` (strides 4..32).
        hidden: decoder width (LAVT: 512 for Swin-B, i.e. C4 / 2).
        num_classes: output classes (2: background / referred object).
        convs_per_level: 3x3 conv-BN-ReLU layers after each concat (LAVT: 2).
        separable: depthwise-separable 3x3 convolutions (fast CPU variants; LAVT: False).
        align_corners: ``align_corners`` of the bilinear upsampling between levels (the official
            LAVT code: True; our own models are trained with False).
    """

    def __init__(
        self,
        in_channels: list[int],
        hidden: int = 512,
        num_classes: int = 2,
        convs_per_level: int = 2,
        separable: bool = False,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.align_corners = align_corners
        if len(in_channels) != 4:
            raise ValueError(f"LAVTDecoder needs 4 stage channels, got {in_channels}")
        levels = []
        previous = in_channels[3]
        for skip in (in_channels[2], in_channels[1], in_channels[0]):
            layers = _conv_bn_relu(previous + skip, hidden, separable)
            for _ in range(convs_per_level - 1):
                layers += _conv_bn_relu(hidden, hidden, separable)
            levels.append(nn.Sequential(*layers))
            previous = hidden
        self.levels = nn.ModuleList(levels)
        self.classifier = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Decode.

        Args:
            features: ``[F1 (B, C1, H/4, W/4), F2 (B, C2, H/8, W/8), F3 (.., H/16), F4 (.., H/32)]``.

        Returns:
            logits ``(B, num_classes, H/4, W/4)``.
        """
        x = features[3]
        for level, skip in zip(self.levels, (features[2], features[1], features[0])):
            x = F.interpolate(
                x, size=skip.shape[-2:], mode="bilinear", align_corners=self.align_corners
            )
            x = level(torch.cat([x, skip], dim=1))
        return self.classifier(x)
