"""Adaptive rotated convolution (Pu et al., ICCV 2023) and RMSIN's decoder built on it.

An adaptive rotated convolution predicts, per sample, an angle ``theta`` in [-40, 40] degrees
and a scale ``alpha`` in (0, 1) from its input (:class:`RoutingFunction`), rotates its 3x3
kernel by ``theta`` and scales it by ``alpha``, then convolves each sample with its own kernel
(one grouped convolution over the batch). The rotation is a fixed 9x9 linear map of the nine
kernel taps whose coefficients are bilinear in ``cos theta`` and ``sin theta``
(:func:`rotation_matrices`); the official code writes it out tap by tap, with one table for
``theta >= 0`` and one for ``theta < 0``. Ours uses the same tables and the same order of
operations, so official checkpoints give the same outputs (pure PyTorch; no custom operator).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis.errors import ModelError

# Rows: output tap, columns: input tap (row-major 3x3). Terms with x = cos, y = sin,
# a = x - y, b = x * y, c = x + y, evaluated left to right as the official code does.
_POSITIVE = (
    ("a", "1-a", "0", "0", "0", "0", "0", "0", "0"),
    ("0", "x-b", "b", "0", "1-c+b", "y-b", "0", "0", "0"),
    ("0", "0", "a", "0", "0", "1-a", "0", "0", "0"),
    ("b", "y-b", "0", "x-b", "1-c+b", "0", "0", "0", "0"),
    ("0", "0", "0", "0", "1", "0", "0", "0", "0"),
    ("0", "0", "0", "0", "1-c+b", "x-b", "0", "y-b", "b"),
    ("0", "0", "0", "1-a", "0", "0", "a", "0", "0"),
    ("0", "0", "0", "y-b", "1-c+b", "0", "b", "x-b", "0"),
    ("0", "0", "0", "0", "0", "0", "0", "1-a", "a"),
)
_NEGATIVE = (
    ("c", "0", "0", "1-c", "0", "0", "0", "0", "0"),
    ("-b", "x+b", "0", "b-y", "1-a-b", "0", "0", "0", "0"),
    ("0", "1-c", "c", "0", "0", "0", "0", "0", "0"),
    ("0", "0", "0", "x+b", "1-a-b", "0", "-b", "b-y", "0"),
    ("0", "0", "0", "0", "1", "0", "0", "0", "0"),
    ("0", "b-y", "-b", "0", "1-a-b", "x+b", "0", "0", "0"),
    ("0", "0", "0", "0", "0", "0", "c", "1-c", "0"),
    ("0", "0", "0", "0", "1-a-b", "b-y", "0", "x+b", "-b"),
    ("0", "0", "0", "0", "0", "1-c", "0", "0", "c"),
)


def rotation_matrices(thetas: Tensor) -> Tensor:
    """The 9x9 maps that rotate a 3x3 kernel by each angle.

    Args:
        thetas: ``(B, n)`` angles in radians.

    Returns:
        ``(B, n, 9, 9)``: ``rotated_taps = matrix @ taps`` for row-major taps.
    """
    x, y = torch.cos(thetas), torch.sin(thetas)
    a, b, c = x - y, x * y, x + y
    terms = {
        "0": torch.zeros_like(x),
        "1": torch.ones_like(x),
        "a": a,
        "1-a": 1 - a,
        "b": b,
        "-b": -b,
        "c": c,
        "1-c": 1 - c,
        "x-b": x - b,
        "y-b": y - b,
        "b-y": b - y,
        "x+b": x + b,
        "1-c+b": 1 - c + b,
        "1-a-b": 1 - a - b,
    }

    def build(table: tuple[tuple[str, ...], ...]) -> Tensor:
        return torch.stack([torch.stack([terms[t] for t in row], -1) for row in table], -2)

    positive = (thetas >= 0)[..., None, None]
    return torch.where(positive, build(_POSITIVE), build(_NEGATIVE))


def rotate_kernels(weight: Tensor, alphas: Tensor, thetas: Tensor) -> Tensor:
    """Per-sample kernels: the ``n`` kernels rotated, scaled and summed.

    Args:
        weight: ``(n, C_out, C_in, 3, 3)``.
        alphas: ``(B, n)`` scales.
        thetas: ``(B, n)`` angles in radians.

    Returns:
        ``(B * C_out, C_in, 3, 3)``: sample b's kernel in rows ``b*C_out:(b+1)*C_out``.
    """
    n, c_out, c_in, k, _ = weight.shape
    batch = thetas.shape[0]
    matrix = rotation_matrices(thetas) * alphas[..., None, None]  # (B, n, 9, 9)
    matrix = matrix.permute(0, 2, 1, 3).reshape(batch * k * k, n * k * k).to(weight.dtype)
    taps = weight.permute(0, 3, 4, 1, 2).reshape(n * k * k, c_out * c_in)
    kernels = (matrix @ taps).view(batch, k, k, c_out, c_in).permute(0, 3, 4, 1, 2)
    return kernels.reshape(batch * c_out, c_in, k, k)


class RoutingFunction(nn.Module):
    """Angle and scale of each kernel from the input map.

    depthwise 3x3 -> LayerNorm over channels -> ReLU -> global mean -> dropout ->
    ``alpha = sigmoid(fc_alpha)``, ``theta = softsign(fc_theta) * max_angle``.

    Args:
        channels: input channels.
        kernels: number of kernels n.
        dropout: dropout before the two heads (official: 0.2).
        max_angle: largest rotation in degrees (official: 40).
    """

    def __init__(
        self, channels: int, kernels: int = 1, dropout: float = 0.2, max_angle: float = 40.0
    ) -> None:
        super().__init__()
        self.dwc = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.norm = nn.LayerNorm(channels)
        self.dropout1 = nn.Dropout(dropout)
        self.fc_alpha = nn.Linear(channels, kernels)
        self.dropout2 = nn.Dropout(dropout)
        self.fc_theta = nn.Linear(channels, kernels, bias=False)
        self.max_angle = max_angle / 180.0 * math.pi
        for weight in (self.dwc.weight, self.fc_alpha.weight, self.fc_theta.weight):
            nn.init.trunc_normal_(weight, std=0.02)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x``: ``(B, C, H, W)`` -> ``alphas (B, n)``, ``thetas (B, n)`` in radians."""
        x = self.norm(self.dwc(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        pooled = F.relu(x).mean(dim=(2, 3))
        alphas = torch.sigmoid(self.fc_alpha(self.dropout1(pooled)))
        thetas = F.softsign(self.fc_theta(self.dropout2(pooled))) * self.max_angle
        return alphas, thetas


class AdaptiveRotatedConv2d(nn.Module):
    """3x3 convolution whose kernel each sample rotates and scales (no bias).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernels: number of kernels n mixed per sample (RMSIN: 1).
        padding: zero padding (1 keeps the size).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernels: int = 1, padding: int = 1
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.kernels = kernels
        self.padding = padding
        self.routing = RoutingFunction(in_channels, kernels)
        # The official (n, C_out, C_in, 3, 3) stored as (n * C_out, C_in, 3, 3): 4-d, so the
        # model can move to channels-last memory like every convolution.
        weight = torch.empty(kernels, out_channels, in_channels, 3, 3)
        nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
        self.weight = nn.Parameter(weight.flatten(0, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""
        batch, channels, height, width = x.shape
        alphas, thetas = self.routing(x)
        weight = self.weight.view(self.kernels, self.out_channels, *self.weight.shape[1:])
        kernels = rotate_kernels(weight, alphas, thetas)
        out = F.conv2d(
            x.reshape(1, batch * channels, height, width),
            kernels.to(x.dtype),
            padding=self.padding,
            groups=batch,
        )
        return out.view(batch, self.out_channels, *out.shape[-2:])


class RotatedDecoder(nn.Module):
    """RMSIN's decoder: LAVT's top-down decoder whose second convolutions rotate.

    Per level: ``concat(up(x), skip) -> conv3x3-BN-ReLU -> rotated conv3x3-BN-ReLU``; then a
    1x1 convolution to the classes at 1/4 resolution. Upsampling is bilinear with
    ``align_corners=True`` (the official code).

    Args:
        in_channels: ``[C1, C2, C3, C4]`` of the stage maps (strides 4..32).
        hidden: decoder width (official: C4 / 2).
        num_classes: output classes.
    """

    def __init__(self, in_channels: list[int], hidden: int, num_classes: int = 2) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ModelError(f"RotatedDecoder needs 4 stage channels, got {in_channels}")
        levels = []
        previous = in_channels[3]
        for skip in (in_channels[2], in_channels[1], in_channels[0]):
            levels.append(
                nn.Sequential(
                    nn.Conv2d(previous + skip, hidden, 3, padding=1, bias=False),
                    nn.BatchNorm2d(hidden),
                    nn.ReLU(),
                    AdaptiveRotatedConv2d(hidden, hidden),
                    nn.BatchNorm2d(hidden),
                    nn.ReLU(),
                )
            )
            previous = hidden
        self.levels = nn.ModuleList(levels)
        self.classifier = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        """``[F1 .. F4]`` (strides 4..32) -> logits ``(B, num_classes, H/4, W/4)``."""
        x = features[3]
        for level, skip in zip(self.levels, (features[2], features[1], features[0])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = level(torch.cat([x, skip], dim=1))
        return self.classifier(x)
