"""CMSA: cross-modal self-attention over (pixel, word) pairs + gated multi-level fusion.

Compact re-implementation of L. Ye, M. Rochan, Z. Liu, Y. Wang, "Cross-Modal Self-Attention
Network for Referring Image Segmentation", CVPR 2019, one of the natural-image methods the RRSIS
paper benchmarks.

For every pixel p and word n the cross-modal feature is ``f_pn = [v_p, w_n, s_p]`` (L2-normalised
visual feature, L2-normalised word feature, 8-D spatial coordinates). Self-attention runs over all
(pixel, word) positions, the result is averaged over the words, and the per-level maps are merged
by a gated fusion with a memory gate and a reset gate per level.

Cost reductions (the original attends over every pair at 1/8 scale on a GPU):

* A linear map of a concatenation is a sum of linear maps of its parts, so query/key/value are
  computed as ``A v_p + B w_n + C s_p`` by broadcasting, never materialising the
  ``(N, H, W, Cv + Cl + 8)`` tensor. This is exact.
* Attention runs on one grid (``grid_level``, stride 16 by default); keys/values are average
  pooled ``key_pool`` x ``key_pool`` in space (pooling is linear, so this equals pooling ``f``),
  and the common padding tail of the batch is dropped.
* A light stride-8 skip connection refines the fused map, because this backbone is not dilated.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis.errors import ModelError
from rrsis.models.baselines.common import (
    COORD_CHANNELS,
    BaselineModel,
    l2_normalize,
    masked_mean,
    spatial_coordinates,
    trim_padding,
)
from rrsis.models.encoders.base import TextEncoder, VisionEncoder
from rrsis.models.encoders.presets import (
    effnet_minilm_encoders,
    extend_signature,
    swin_bert_encoders,
)


class CrossModalSelfAttention(nn.Module):
    """Self-attention over the (pixel, word) cross-modal features of one visual level.

    Args:
        visual_dim: channels Cv of the visual map.
        word_dim: word feature size Cl.
        key_dim: query/key width.
        value_dim: value and output width.
        key_pool: spatial average-pool factor for keys and values (1 = full attention).
    """

    def __init__(self, visual_dim: int, word_dim: int, key_dim: int, value_dim: int, key_pool: int):
        super().__init__()
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.key_pool = key_pool
        # Outputs, in order: query, key, value, residual (the projected f_pn added back).
        widths = [key_dim, key_dim, value_dim, value_dim]
        self.widths = widths
        self.pixel_proj = nn.Conv2d(visual_dim + COORD_CHANNELS, sum(widths), 1)
        self.word_proj = nn.Linear(word_dim, sum(widths), bias=False)
        self.out_proj = nn.Linear(value_dim, value_dim)

    def forward(self, visual: Tensor, coords: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """Attend and average over words.

        Args:
            visual: ``(B, Cv, h, w)`` visual map.
            coords: ``(1, 8, h, w)`` spatial coordinates.
            words: ``(B, N, Cl)``.
            word_mask: ``(B, N)``, 1 for real tokens.

        Returns:
            ``(B, value_dim, h, w)`` word-averaged self-attentive cross-modal map.
        """
        b, _, h, w = visual.shape
        n = words.shape[1]
        pixel_in = torch.cat([l2_normalize(visual, 1), coords.expand(b, -1, h, w)], dim=1)
        pixel = self.pixel_proj(pixel_in)  # (B, sum(widths), h, w)
        word = self.word_proj(l2_normalize(words, 2))  # (B, N, sum(widths))
        pq, pk, pv, pr = pixel.split(self.widths, dim=1)
        wq, wk, wv, wr = word.split(self.widths, dim=-1)

        def pairs(pixel_part: Tensor, word_part: Tensor) -> Tensor:
            # (B, C, h', w') + (B, N, C) -> (B, N * h' * w', C), word-major.
            flat = pixel_part.flatten(2).transpose(1, 2)  # (B, h'w', C)
            return (flat[:, None] + word_part[:, :, None]).flatten(1, 2)

        if self.key_pool > 1:
            pool = self.key_pool
            pk = F.avg_pool2d(pk, pool, ceil_mode=True)
            pv = F.avg_pool2d(pv, pool, ceil_mode=True)
        keys_per_word = pk.shape[-2] * pk.shape[-1]
        query = pairs(pq, wq)
        key = pairs(pk, wk)
        value = pairs(pv, wv)
        # Padded words may not be attended to: (B, 1, N * h'w') boolean, True = attend.
        attend = word_mask.bool().repeat_interleave(keys_per_word, dim=1)[:, None, :]
        out = F.scaled_dot_product_attention(
            query[:, None], key[:, None], value[:, None], attn_mask=attend[:, None]
        )[:, 0]
        out = self.out_proj(out) + pairs(pr, wr)  # (B, N * h * w, value_dim)
        out = masked_mean(out.view(b, n, h * w, self.value_dim), word_mask)
        return out.transpose(1, 2).reshape(b, self.value_dim, h, w)


class GatedMultiLevelFusion(nn.Module):
    """CMSA's gated fusion: each level takes gated messages from the others, then is reset-gated.

    For levels ``X^i``: memory gate ``m^i`` and reset gate ``r^i`` (one channel each, sigmoid of a
    conv on ``X^i``); ``C^i = (1 - m^i) X^i + sum_{j != i} g_j m^j X^j`` with learned scalars
    ``g_j``; ``O^i = r^i tanh(C^i) + (1 - r^i) X^i``; output ``sum_i O^i``.

    Args:
        dim: channels of every level.
        num_levels: number of levels.
    """

    def __init__(self, dim: int, num_levels: int):
        super().__init__()
        self.memory_gates = nn.ModuleList(
            nn.Conv2d(dim, 1, 3, padding=1) for _ in range(num_levels)
        )
        self.reset_gates = nn.ModuleList(nn.Conv2d(dim, 1, 3, padding=1) for _ in range(num_levels))
        self.message_scale = nn.Parameter(torch.ones(num_levels))

    def forward(self, levels: list[Tensor]) -> Tensor:
        """Args: ``levels``: maps ``(B, dim, h, w)`` of equal shape. Returns ``(B, dim, h, w)``."""
        memory = [torch.sigmoid(g(x)) for g, x in zip(self.memory_gates, levels)]
        messages = [self.message_scale[j] * memory[j] * x for j, x in enumerate(levels)]
        total = torch.stack(messages).sum(0)
        fused = 0
        for i, x in enumerate(levels):
            context = (1 - memory[i]) * x + (total - messages[i])
            reset = torch.sigmoid(self.reset_gates[i](x))
            fused = fused + reset * torch.tanh(context) + (1 - reset) * x
        return fused


class CMSAHead(nn.Module):
    """Cross-modal self-attention on several levels, gated fusion and a small decoder.

    Args:
        visual_channels: channels of the four encoder stages (strides 4, 8, 16, 32).
        word_dim: word feature size of the text encoder.
        levels: encoder stages fused (the original uses three; default strides 8, 16, 32).
        grid_level: stage whose resolution the attention runs at (2 = stride 16).
        key_dim: query/key width.
        value_dim: width of the cross-modal maps.
        key_pool: spatial pooling of keys/values.
        skip_level: stage of the skip connection refining the fused map (``None``: no skip).
        skip_dim: channels the skip feature is projected to.
        use_coords: append spatial coordinates; ``False`` feeds zeros (same weights).
    """

    def __init__(
        self,
        visual_channels: list[int],
        word_dim: int,
        *,
        levels: tuple[int, ...] = (1, 2, 3),
        grid_level: int = 2,
        key_dim: int = 64,
        value_dim: int = 128,
        key_pool: int = 2,
        skip_level: int | None = 1,
        skip_dim: int = 48,
        use_coords: bool = True,
    ):
        super().__init__()
        n_stages = len(visual_channels)
        if not levels or any(not 0 <= i < n_stages for i in levels):
            raise ModelError(f"levels must be stage indices in 0..{n_stages - 1}, got {levels}")
        if not 0 <= grid_level < n_stages:
            raise ModelError(f"grid_level must be in 0..{n_stages - 1}, got {grid_level}")
        if skip_level is not None and not 0 <= skip_level < n_stages:
            raise ModelError(f"skip_level must be None or in 0..{n_stages - 1}, got {skip_level}")
        if key_pool < 1:
            raise ModelError(f"key_pool must be >= 1, got {key_pool}")
        self.levels = tuple(levels)
        self.grid_level = grid_level
        self.skip_level = skip_level
        self.use_coords = use_coords
        self.attention = nn.ModuleList(
            CrossModalSelfAttention(visual_channels[i], word_dim, key_dim, value_dim, key_pool)
            for i in self.levels
        )
        self.fusion = GatedMultiLevelFusion(value_dim, len(self.levels))
        self.fused_conv = nn.Sequential(
            nn.Conv2d(value_dim, value_dim, 3, padding=1), nn.ReLU(True)
        )
        head_in = value_dim
        if skip_level is not None:
            self.skip = nn.Sequential(
                nn.Conv2d(visual_channels[skip_level], skip_dim, 1), nn.ReLU(True)
            )
            head_in += skip_dim
        self.classifier = nn.Sequential(
            nn.Conv2d(head_in, value_dim, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(value_dim, 2, 1),
        )

    def forward(self, features: list[Tensor], words: Tensor, word_mask: Tensor) -> Tensor:
        """Predict coarse logits.

        Args:
            features: four maps ``(B, C_i, H/s_i, W/s_i)``, strides 4, 8, 16, 32.
            words: ``(B, N, C)``.
            word_mask: ``(B, N)``.

        Returns:
            ``(B, 2, h, w)`` logits at the skip level's stride (grid stride without skip).
        """
        words, word_mask = trim_padding(words, word_mask)
        grid = features[self.grid_level].shape[-2:]
        coords = spatial_coordinates(*grid, device=words.device, dtype=words.dtype)
        if not self.use_coords:
            coords = torch.zeros_like(coords)
        maps = []
        for attention, level in zip(self.attention, self.levels):
            visual = _resize(features[level], grid)
            maps.append(attention(visual, coords, words, word_mask))
        fused = self.fused_conv(self.fusion(maps))
        if self.skip_level is not None:
            skip = self.skip(features[self.skip_level])
            fused = F.interpolate(fused, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            fused = torch.cat([fused, skip], dim=1)
        return self.classifier(fused)


def _resize(x: Tensor, size: torch.Size) -> Tensor:
    """Average-pool finer maps (keeps their detail as a mean) and bilinearly upsample coarser ones."""
    if x.shape[-2:] == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class CMSA(BaselineModel):
    """CMSA (Ye et al., CVPR 2019): cross-modal self-attention + gated multi-level fusion.

    ``forward(image (B, 3, H, W), word_ids (B, N), word_mask (B, N)) -> logits (B, 2, H, W)``.

    Args:
        vision: four-stage visual encoder (strides 4, 8, 16, 32).
        text: word-feature encoder.
        input_size: default square input side.
        **head_kwargs: :class:`CMSAHead` options (``levels``, ``grid_level``, ``key_dim``,
            ``value_dim``, ``key_pool``, ``skip_level``, ``skip_dim``, ``use_coords``).
    """

    def __init__(
        self, vision: VisionEncoder, text: TextEncoder, input_size: int = 480, **head_kwargs: Any
    ) -> None:
        head = CMSAHead(list(vision.out_channels), text.out_dim, **head_kwargs)
        super().__init__(vision, text, head, input_size=input_size)


def cmsa_effnet_minilm(
    input_size: int = 512,
    levels: tuple[int, ...] = (1, 2, 3),
    grid_level: int = 2,
    key_dim: int = 64,
    value_dim: int = 64,
    key_pool: int = 4,
    skip_level: int | None = 1,
    skip_dim: int = 48,
    use_coords: bool = True,
    **encoder_kwargs: Any,
) -> CMSA:
    """CMSA on EfficientNet-Lite + frozen MiniLM (the CPU benchmark configuration).

    Sized for CPU: queries at stride 16, keys/values pooled to stride 64, 64-d cross-modal maps
    (about 5.3 GFLOPs at 512x512 for a 7-token expression, vs 7.6 for ``lavt_effnet_minilm``).

    Args:
        input_size: default square input side.
        levels, grid_level, key_dim, value_dim, key_pool, skip_level, skip_dim, use_coords:
            see :class:`CMSAHead`.
        **encoder_kwargs: :func:`~rrsis.models.encoders.presets.effnet_minilm_encoders` arguments.
    """
    vision, text = effnet_minilm_encoders(**encoder_kwargs)
    return CMSA(
        vision, text, input_size=input_size, levels=tuple(levels), grid_level=grid_level,
        key_dim=key_dim, value_dim=value_dim, key_pool=key_pool, skip_level=skip_level,
        skip_dim=skip_dim, use_coords=use_coords,
    )  # fmt: skip


def cmsa_swin_base(
    input_size: int = 480,
    levels: tuple[int, ...] = (1, 2, 3),
    grid_level: int = 2,
    key_dim: int = 64,
    value_dim: int = 256,
    key_pool: int = 2,
    skip_level: int | None = 1,
    skip_dim: int = 48,
    use_coords: bool = True,
    **encoder_kwargs: Any,
) -> CMSA:
    """CMSA on the paper's encoders, Swin-B + BERT-base (weights only from local paths).

    Args:
        input_size: default square input side.
        levels, grid_level, key_dim, value_dim, key_pool, skip_level, skip_dim, use_coords:
            see :class:`CMSAHead`.
        **encoder_kwargs: :func:`~rrsis.models.encoders.presets.swin_bert_encoders` arguments.
    """
    vision, text = swin_bert_encoders(**encoder_kwargs)
    return CMSA(
        vision, text, input_size=input_size, levels=tuple(levels), grid_level=grid_level,
        key_dim=key_dim, value_dim=value_dim, key_pool=key_pool, skip_level=skip_level,
        skip_dim=skip_dim, use_coords=use_coords,
    )  # fmt: skip


extend_signature(cmsa_effnet_minilm, effnet_minilm_encoders)
extend_signature(cmsa_swin_base, swin_bert_encoders)
