"""Language fusion of LAVT: the pixel-word attention module (PWAM) and the language gate.

After each encoder stage, PWAM turns the visual map and the word features into a multimodal
residual ``r``; the gate decides, per pixel and channel, how much of it enters the visual
stream: ``x = x + gate(r) * r`` (Yang et al., CVPR 2022).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def coordinate_grid(height: int, width: int, like: Tensor) -> Tensor:
    """``(1, 2, H, W)`` pixel-centre coordinates in ``[-1, 1]`` (x, then y), dtype of ``like``."""
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) * (2.0 / height) - 1
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) * (2.0 / width) - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])[None]


class PixelWordAttention(nn.Module):
    """PWAM: every pixel attends over the words; the result modulates the visual projection.

    Args:
        visual_dim: channels C of the visual map (output keeps C).
        text_dim: feature size C_l of the words.
        num_heads: attention heads (LAVT uses 1).
        dropout: dropout after the projections.
        coord_features: add a learned embedding of each pixel's image coordinates to the
            visual map before fusion (our addition, off in LAVT). Convolutional features carry
            little absolute position, which expressions such as "the road in the upper left"
            need; the embedding starts at zero, so the module starts as plain PWAM.
    """

    def __init__(
        self,
        visual_dim: int,
        text_dim: int,
        num_heads: int = 1,
        dropout: float = 0.0,
        coord_features: bool = False,
    ) -> None:
        super().__init__()
        self.coord_embed = None
        if coord_features:
            hidden = min(32, visual_dim)
            self.coord_embed = nn.Sequential(
                nn.Conv2d(2, hidden, 1), nn.GELU(), nn.Conv2d(hidden, visual_dim, 1)
            )
            nn.init.zeros_(self.coord_embed[2].weight)
            nn.init.zeros_(self.coord_embed[2].bias)
        if visual_dim % num_heads:
            raise ValueError(f"visual_dim {visual_dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.visual_project = nn.Sequential(
            nn.Conv2d(visual_dim, visual_dim, 1), nn.GELU(), nn.Dropout(dropout)
        )
        # Instance norm on queries and on the attended map, as LAVT does, keeps the scale of the
        # language map comparable to the visual one whatever the stage.
        self.query = nn.Sequential(
            nn.Conv2d(visual_dim, visual_dim, 1), nn.InstanceNorm2d(visual_dim)
        )
        self.key = nn.Linear(text_dim, visual_dim)
        self.value = nn.Linear(text_dim, visual_dim)
        self.attended_out = nn.Sequential(
            nn.Conv2d(visual_dim, visual_dim, 1), nn.InstanceNorm2d(visual_dim)
        )
        self.project = nn.Sequential(
            nn.Conv2d(visual_dim, visual_dim, 1), nn.GELU(), nn.Dropout(dropout)
        )

    def forward(self, visual: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """Fuse words into a visual map.

        Args:
            visual: ``(B, C, H, W)`` stage output.
            words: ``(B, N, C_l)`` word features.
            word_mask: ``(B, N)`` 1 for words, 0 for padding (never attended to).

        Returns:
            the multimodal residual ``r`` ``(B, C, H, W)``.
        """
        batch, channels, height, width = visual.shape
        heads = self.num_heads
        if self.coord_embed is not None:
            visual = visual + self.coord_embed(coordinate_grid(height, width, visual))
        query = self.query(visual).flatten(2).transpose(1, 2)  # (B, HW, C)
        query = query.reshape(batch, height * width, heads, -1).transpose(1, 2)
        key = self.key(words).reshape(batch, -1, heads, channels // heads).transpose(1, 2)
        value = self.value(words).reshape(batch, -1, heads, channels // heads).transpose(1, 2)
        # Boolean mask: True where attention is allowed; padded words are excluded for all pixels.
        allowed = word_mask.bool()[:, None, None, :]
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed)
        attended = attended.transpose(1, 2).reshape(batch, height, width, channels)
        attended = self.attended_out(attended.permute(0, 3, 1, 2))
        return self.project(self.visual_project(visual) * attended)


class LanguageGate(nn.Module):
    """Per-pixel, per-channel gate in [-1, 1] over the fused residual (Linear-ReLU-Linear-Tanh).

    Args:
        dim: channels C.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim, dim, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, residual: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> gate ``(B, C, H, W)``; the caller does ``x + gate * residual``."""
        return self.net(residual)


class SpatialPrior(nn.Module):
    """Sentence -> a coarse grid of foreground-logit offsets (our addition, not in LAVT).

    Position expressions ("building in the upper left", "road at the top") name a region of
    the image. Pixel-word attention can only learn such a region indirectly; this module maps
    the mean word feature to ``grid x grid`` offsets, bilinearly upsampled and added to the
    foreground logit, so "upper left" can lower the score of the other three quadrants
    directly. The last layer starts at zero (no offset), and a 6 x 6 grid resolves both the
    halves and the thirds that position expressions use.

    Args:
        text_dim: word feature size ``C_l``.
        grid: side of the offset grid.
        hidden: width of the hidden layer.
    """

    def __init__(self, text_dim: int, grid: int = 6, hidden: int = 128) -> None:
        super().__init__()
        self.grid = int(grid)
        self.mlp = nn.Sequential(
            nn.Linear(text_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, grid * grid)
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, words: Tensor, word_mask: Tensor, size: tuple[int, int]) -> Tensor:
        """``(B, N, C_l)``, ``(B, N)`` -> offsets ``(B, 1, *size)``."""
        weights = word_mask.to(words.dtype)[..., None]
        sentence = (words * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        offsets = self.mlp(sentence).view(-1, 1, self.grid, self.grid)
        return F.interpolate(offsets, size=size, mode="bilinear", align_corners=False)
