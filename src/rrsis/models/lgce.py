"""LGCE: language-guided cross-scale enhancement (Yuan et al., TGRS 2024).

The paper adds LGCE between LAVT's encoder and decoder so that small and scattered objects,
which are weak in the deep maps and ambiguous in the shallow ones, get both: deep (semantic)
evidence is injected into the shallow (detail) maps and shallow detail is sent back up. The
sentence decides how much each scale contributes. The paper's code is unpublished; this is our
design (docs/lgce.md):

1. project each map ``F_i (B, C_i, h_i, w_i)`` to a shared width D: ``P_i``;
2. sentence feature ``s`` = masked mean of the words -> channel gates ``g_i = sigmoid(MLP_i(s))``
   and a spatial relevance map ``a_i = sigmoid(<P_i, W_i s>)`` per scale;
3. cross-scale attention weights ``w_ij = softmax_j(<q_i(s), k_j(mean-pool P_j)>)`` over the
   allowed sources j of target i (itself, the deeper maps, the shallower maps);
4. ``M_i = sum_j w_ij * resize(g_j * a_j * P_j -> size of i)``;
5. ``F_i' = F_i + gamma_i * out_i(M_i)`` with ``gamma_i`` zero-initialised: identity at start.

Without language guidance, gates and attention weights come from the pooled visual features
instead of ``s`` (and no relevance map is used), which is the ablation "cross-scale only".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masked_mean(words: Tensor, word_mask: Tensor) -> Tensor:
    """Sentence feature: mean of the real words (the baselines use it too).

    Args:
        words: ``(B, N, C)``, or ``(B, N, ...)`` per-word maps.
        word_mask: ``(B, N)`` 1 for words, 0 for padding.

    Returns:
        ``(B, C)`` (``(B, ...)``); an all-padding row gives zeros rather than NaN.
    """
    weights = word_mask.to(words.dtype).view(*word_mask.shape, *([1] * (words.ndim - 2)))
    return (words * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def pool_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``adaptive_avg_pool2d(x, size)``; a whole-number ratio runs as ``avg_pool2d`` (the same
    values, and an ONNX export that does not need the sizes as constants)."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    rows, cols = int(size[0]), int(size[1])
    if height % rows == 0 and width % cols == 0:
        return F.avg_pool2d(x, (height // rows, width // cols))
    return F.adaptive_avg_pool2d(x, size)


class LGCE(nn.Module):
    """Language-guided cross-scale enhancement of four stage maps.

    Args:
        in_channels: ``[C1, C2, C3, C4]`` of the maps (strides 4, 8, 16, 32).
        text_dim: word feature size C_l.
        dim: shared width D of the cross-scale exchange.
        language_guidance: condition gates, attention weights and relevance maps on the sentence.
        deep_to_shallow: let each map receive the deeper maps (upsampled).
        shallow_to_deep: let each map receive the shallower maps (area-pooled).
        init_scale: initial value of the residual scales gamma (0 = identity at start).
    """

    def __init__(
        self,
        in_channels: list[int],
        text_dim: int,
        dim: int = 256,
        language_guidance: bool = True,
        deep_to_shallow: bool = True,
        shallow_to_deep: bool = True,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        self.language_guidance = language_guidance
        self.deep_to_shallow = deep_to_shallow
        self.shallow_to_deep = shallow_to_deep
        self.dim = dim
        levels = len(in_channels)
        self.project = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.GELU())
            for c in in_channels
        )
        # The conditioning vector is the sentence (guided) or the pooled map itself (ablation).
        cond_dim = text_dim if language_guidance else dim
        self.channel_gate = nn.ModuleList(
            nn.Sequential(nn.Linear(cond_dim, dim), nn.ReLU(), nn.Linear(dim, dim))
            for _ in in_channels
        )
        # Only the guided variant has relevance maps (no empty parameters in the ablation).
        self.relevance = nn.ModuleList(
            nn.Linear(text_dim, dim) for _ in (in_channels if language_guidance else [])
        )
        self.scale_query = nn.ModuleList(nn.Linear(cond_dim, dim) for _ in in_channels)
        self.scale_key = nn.Linear(dim, dim)
        self.out = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False),
                nn.BatchNorm2d(dim),
                nn.GELU(),
                nn.Conv2d(dim, c, 1),
            )
            for c in in_channels
        )
        self.gamma = nn.ParameterList(
            nn.Parameter(torch.full((c,), float(init_scale))) for c in in_channels
        )
        self.levels = levels

    def sources(self, target: int) -> list[int]:
        """Scales that feed ``target`` under the current switches (always itself)."""
        allowed = [target]
        if self.deep_to_shallow:
            allowed += [j for j in range(self.levels) if j > target]
        if self.shallow_to_deep:
            allowed += [j for j in range(self.levels) if j < target]
        return sorted(allowed)

    def forward(self, features: list[Tensor], words: Tensor, word_mask: Tensor) -> list[Tensor]:
        """Enhance the maps.

        Args:
            features: ``[F_i (B, C_i, H/s_i, W/s_i)]`` for strides 4, 8, 16, 32.
            words: ``(B, N, C_l)`` word features.
            word_mask: ``(B, N)`` 1 for words, 0 for padding.

        Returns:
            maps of the same shapes, ``F_i + gamma_i * delta_i``.
        """
        sentence = masked_mean(words, word_mask)  # (B, C_l)
        projected = [proj(f) for proj, f in zip(self.project, features)]
        pooled = [p.mean(dim=(2, 3)) for p in projected]  # (B, D) each
        messages = []
        for j, p in enumerate(projected):
            cond = sentence if self.language_guidance else pooled[j]
            gate = torch.sigmoid(self.channel_gate[j](cond))[:, :, None, None]
            message = p * gate
            if self.language_guidance:
                # Where on this map is the referred object? Sharpens small, scattered targets.
                lang = self.relevance[j](sentence)  # (B, D)
                # A batched matrix product, not einsum: ONNX Runtime's Einsum is slower.
                batch, dim, height, width = p.shape
                flat = p.reshape(batch, dim, height * width)
                score = torch.matmul(lang.unsqueeze(1), flat).view(batch, height, width)
                score = score / math.sqrt(self.dim)
                message = message * torch.sigmoid(score).unsqueeze(1)
            messages.append(message)
        keys = self.scale_key(torch.stack(pooled, dim=1))  # (B, L, D)
        outputs = []
        for i, feature in enumerate(features):
            src = self.sources(i)
            cond = sentence if self.language_guidance else pooled[i]
            query = self.scale_query[i](cond)  # (B, D)
            logits = torch.matmul(keys[:, src], query.unsqueeze(2)).squeeze(2) / math.sqrt(self.dim)
            weights = logits.softmax(dim=1)  # (B, |src|)
            size = feature.shape[-2:]
            mixed = 0
            for k, j in enumerate(src):
                message = messages[j]
                if j > i:
                    message = F.interpolate(
                        message, size=size, mode="bilinear", align_corners=False
                    )
                elif j < i:
                    message = pool_to(message, size)
                mixed = mixed + weights[:, k, None, None, None] * message
            delta = self.out[i](mixed)
            outputs.append(feature + self.gamma[i].view(1, -1, 1, 1) * delta)
        return outputs
