"""RMSIN's own modules (Liu et al., CVPR 2024): the visual branch of its intra-scale interaction
and its cross-scale interaction module (CIM), as the official code (Lsan2401/RMSIN) computes them.

* :class:`ReceptiveBranch` ("various receptive" branch): a spatial weight map from the channel
  mean of a stage map through two re-parameterisable conv blocks on one channel, then a
  sigmoid; the map rescales the stage features. The model gates it like the PWAM residual.
* :class:`CrossScaleInteraction` (CIM): the four normalised stage maps are average-pooled to one
  ``grid x grid`` size (the stride-32 map of the design input: 15 for 480 px), concatenated,
  reduced to a quarter of the channels, passed through attention over tokens of three scales
  (the map, a stride-2 and a stride-3 depthwise-downsampled copy), per-scale and joint
  feed-forward layers, expanded back, split per stage and merged into each stage map by a
  scale-aware gate.

Attribute names follow the official modules so that converted checkpoints keep their keys
(``rrsis.models.convert_rmsin``). Two reshapes of the official attention regroup tensors without
permuting their axes first (see :class:`CrossScaleAttentionCore`); we keep them, since trained
weights depend on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis.errors import ModelError


def _conv_bn(channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(channels),
    )


class RepBranches(nn.Module):
    """``1x1 conv-BN-3x3 conv-BN`` + ``1x1 conv-BN`` + ``BN`` (identity), summed."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.kxk = nn.Sequential(*_conv_bn(channels, 1), *_conv_bn(channels, 3))
        self.pointwise = _conv_bn(channels, 1)
        self.identity = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(x) + self.kxk(x) + self.identity(x)


class ReceptiveBranch(nn.Module):
    """Spatial re-weighting of a stage map: ``x * sigmoid(B2(relu(B1(mean_c x))))``.

    ``(B, C, H, W) -> (B, C, H, W)``; ``B1``, ``B2`` are :class:`RepBranches` on one channel.
    """

    def __init__(self) -> None:
        super().__init__()
        self.first = RepBranches(1)
        self.second = RepBranches(1)

    def forward(self, x: Tensor) -> Tensor:
        weight = torch.sigmoid(self.second(F.relu(self.first(x.mean(dim=1, keepdim=True)))))
        return x * weight


class HardSigmoid(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x + 3) / 6


class LinearBN(nn.Sequential):
    """Linear (no bias) + BatchNorm1d over all tokens: ``(B, N, C_in) -> (B, N, C_out)``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.add_module("c", nn.Linear(in_features, out_features, bias=False))
        self.add_module("bn", nn.BatchNorm1d(out_features))

    def forward(self, x: Tensor) -> Tensor:
        y = self.c(x)
        return self.bn(y.flatten(0, 1)).reshape_as(y)


class Residual(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.m = module

    def forward(self, x: Tensor) -> Tensor:
        return x + self.m(x)


class ScaleAwareGate(nn.Module):
    """Merge CIM's output into a stage map: ``BN(W_l x_l) * hsig(up(BN(W_a x_g))) + up(BN(W_g x_g))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.local_embedding = nn.Conv2d(channels, channels, 1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.global_embedding = nn.Conv2d(channels, channels, 1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.global_act = nn.Conv2d(channels, channels, 1)
        self.bn3 = nn.BatchNorm2d(channels)
        self.act = HardSigmoid()

    def forward(self, local: Tensor, global_: Tensor) -> Tensor:
        """``local (B, C, H, W)``, ``global_ (B, C, g, g)`` -> ``(B, C, H, W)``."""
        size = local.shape[-2:]
        local_feat = self.bn1(self.local_embedding(local))
        global_feat = self.bn2(self.global_embedding(global_))
        global_feat = F.interpolate(global_feat, size=size, mode="bilinear", align_corners=False)
        act = self.act(self.bn3(self.global_act(global_)))
        act = F.interpolate(act, size=size, mode="bilinear", align_corners=False)
        return local_feat * act + global_feat


def _pooled_side(side: int, kernel: int, stride: int) -> int:
    return (side + 2 * (kernel // 2) - kernel) // stride + 1


class CrossScaleAttentionCore(nn.Module):
    """Multi-head attention over the tokens of the three scales, plus a convolutional path.

    Args:
        dim: token channels.
        grid: side of the full-resolution token map (its ``grid**2`` tokens come first).
        tokens: total tokens of the three scales.
        key_dim, num_heads, attn_ratio: official 32, 8 and 2.
    """

    def __init__(
        self,
        dim: int,
        grid: int,
        tokens: int,
        key_dim: int = 32,
        num_heads: int = 8,
        attn_ratio: int = 2,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.grid = grid
        self.d = attn_ratio * key_dim
        self.dh = self.d * num_heads
        self.qkv = LinearBN(dim, self.dh + 2 * key_dim * num_heads)
        self.parallel_conv = nn.Sequential(
            nn.Hardswish(), nn.Conv2d(self.dh, self.dh, 3, padding=1, groups=self.dh)
        )
        self.to_out = nn.Linear(self.dh, dim)
        self.proj = nn.Linear(tokens, grid * grid)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C)`` tokens -> ``(B, grid**2, C)``."""
        batch, tokens, _ = x.shape
        q, k, v = (
            self.qkv(x)
            .view(batch, tokens, self.num_heads, -1)
            .split([self.key_dim, self.key_dim, self.d], dim=3)
        )
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        # As the official code: the (heads, tokens, d) values of the full-resolution tokens are
        # regrouped into a (heads*d, grid, grid) map by reshape alone (no axis permutation).
        v_map = v[:, :, : self.grid * self.grid].reshape(batch, self.dh, self.grid, -1)
        v_conv = self.parallel_conv(v_map).flatten(2)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        # Same here: (B, N, heads*d) memory read as (B, heads*d, N).
        out = (attn @ v).transpose(1, 2).reshape(batch, -1, tokens)
        out = self.proj(out) + v_conv
        return self.to_out(out.permute(0, 2, 1))


class CrossScaleAttention(nn.Module):
    """Tokens of the map and of two depthwise-downsampled copies attend jointly (CIM block part)."""

    def __init__(self, dim: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.bn1 = nn.BatchNorm2d(dim)
        self.DWConv1 = nn.Sequential(  # noqa: N815 - official checkpoint name
            nn.Conv2d(dim, dim, 3, stride=2, padding=1, groups=dim), nn.BatchNorm2d(dim)
        )
        self.DWConv2 = nn.Sequential(  # noqa: N815 - official checkpoint name
            nn.Conv2d(dim, dim, 5, stride=3, padding=2, groups=dim), nn.BatchNorm2d(dim)
        )
        tokens = grid**2 + _pooled_side(grid, 3, 2) ** 2 + _pooled_side(grid, 5, 3) ** 2
        self.attention = CrossScaleAttentionCore(dim, grid, tokens)
        self.bn4 = nn.BatchNorm2d(dim)
        self.activate = nn.Hardswish()
        self.conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, grid, grid)`` -> same shape."""
        x0 = self.bn1(x)
        scales = [x0, self.DWConv1(x0), self.DWConv2(x0)]
        tokens = torch.cat([s.flatten(2) for s in scales], dim=2).permute(0, 2, 1)
        out = self.attention(tokens).permute(0, 2, 1).reshape(x.shape)
        return self.conv(self.activate(self.bn4(out)))


class FeedForward(nn.Module):
    """BN - 1x1 - BN - depthwise-grouped 3x3 - ReLU6 - 1x1."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, hidden, 1)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=dim)
        self.relu = nn.ReLU6()
        self.conv3 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.relu(self.conv2(self.bn2(self.conv1(self.bn1(x))))))


class IntraFeedForward(nn.Module):
    """One residual feed-forward per stage's slice of the channels."""

    def __init__(self, channels: list[int], mlp_ratio: int = 2) -> None:
        super().__init__()
        self.channels = [c // 4 for c in channels]
        for i, c in enumerate(self.channels, start=1):
            self.add_module(f"ff{i}", Residual(FeedForward(c, mlp_ratio * c)))

    def forward(self, x: Tensor) -> Tensor:
        parts = x.split(self.channels, dim=1)
        return torch.cat([getattr(self, f"ff{i + 1}")(p) for i, p in enumerate(parts)], dim=1)


class CIMBlock(nn.Module):
    """Cross-scale attention, per-stage feed-forward, cross-scale attention, feed-forward."""

    def __init__(self, dim: int, channels: list[int], grid: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.csa1 = Residual(CrossScaleAttention(dim, grid))
        self.intra_ff = Residual(IntraFeedForward(channels, mlp_ratio))
        self.csa2 = Residual(CrossScaleAttention(dim, grid))
        self.ff = Residual(FeedForward(dim, dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(self.csa2(self.intra_ff(self.csa1(x))))


class CrossScaleInteraction(nn.Module):
    """CIM: exchange between the four stage maps on a shared ``grid x grid`` pyramid.

    Args:
        channels: ``[C1, C2, C3, C4]``; each must be divisible by 4.
        grid: side the maps are pooled to. The official code pools to the stride-32 map's own
            size and fixes its attention to 15 x 15 tokens (480 px inputs); a fixed grid is
            the same at that size and lets other input sizes run.
        num_layers: CIM blocks (official: 1).
    """

    def __init__(self, channels: list[int], grid: int = 15, num_layers: int = 1) -> None:
        super().__init__()
        if any(c % 4 for c in channels):
            raise ModelError(f"CIM needs stage channels divisible by 4, got {channels}")
        self.channels = list(channels)
        self.grid = grid
        dim = sum(channels)
        hidden = dim // 4
        self.down_channel = nn.Conv2d(dim, hidden, 1)
        self.up_channel = nn.Conv2d(hidden, dim, 1)
        self.block = nn.ModuleList(CIMBlock(hidden, channels, grid) for _ in range(num_layers))
        self.bn = nn.BatchNorm2d(hidden)
        self.fusion = nn.ModuleList(ScaleAwareGate(c) for c in channels)

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        """``[F_i (B, C_i, H/s_i, W/s_i)]`` -> maps of the same shapes."""
        size = (self.grid, self.grid)
        out = torch.cat([F.adaptive_avg_pool2d(m, size) for m in maps], dim=1)
        out = self.down_channel(out)
        for layer in self.block:
            out = layer(out)
        out = self.up_channel(self.bn(out))
        parts = out.split(self.channels, dim=1)
        return [gate(m, p) for gate, m, p in zip(self.fusion, maps, parts)]
