"""Swin Transformer backbone (Liu et al. 2021) in the segmentation form LAVT uses.

Compact own implementation: 4x4 patch embedding, window attention with a relative position
bias, shifted windows with the cyclic-shift mask, patch merging, stochastic depth and one
LayerNorm per stage output (``norm0..norm3`` as in LAVT). Feature maps that are not a multiple
of the window are zero-padded (LAVT/segmentation Swin; no window clamping), so any input that
is a multiple of 32 works (480 with window 12 gives 120/60/30/15 maps).

Speed notes (CPU inference is what we ship): attention is one ``F.scaled_dot_product_attention``
call per block with the relative position bias (plus the shift mask) as its additive mask;
blocks work on ``(B, H, W, C)`` tensors, which are exactly the memory of a channels-last
``(B, C, H, W)`` map, so the channels-first maps of the VisionEncoder interface are free views.

Module names mirror the official Swin checkpoints (``patch_embed``, ``layers.i.blocks.j.attn.qkv``
...), so those load directly; transformers ``SwinModel`` weights are renamed on load (``swin_weights``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis.errors import ModelError
from rrsis.models.encoders.base import VisionEncoder
from rrsis.models.encoders.swin_weights import load_swin_weights
from rrsis.models.encoders.swin_windows import relative_position_index, window_tensors


def _drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescale the survivors."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``w x w`` windows with a relative position bias.

    Args:
        dim: channels C.
        num_heads: heads; ``C`` must be divisible by it.
        window_size: window side w.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        if dim % num_heads:
            raise ModelError(f"Swin: channels {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        # Not persistent: fully determined by the window, and official checkpoints carry their own.
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size), persistent=False
        )
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Inference-only cache of the additive mask (bias [+ shift mask]); see attention_mask.
        self._mask_cache: tuple[tuple, Tensor] | None = None

    def position_bias(self) -> Tensor:
        """Relative position bias ``(heads, N, N)`` with ``N = w*w``."""
        n = self.window_size**2
        bias = self.relative_position_bias_table.index_select(
            0, self.relative_position_index.view(-1)
        )
        # Contiguous: SDPA would otherwise copy every (nW, heads, N, N) mask built from it.
        return bias.view(n, n, self.num_heads).permute(2, 0, 1).contiguous()

    def attention_mask(
        self, shift_mask: Tensor | None, map_size: tuple[int, int], dtype: torch.dtype
    ) -> Tensor:
        """Additive SDPA mask: ``(1, heads, N, N)`` or, shifted, ``(1, nW*heads, N, N)``.

        Without autograd (inference) the result is cached, keyed by the bias table's version
        counter (bumped by load_state_dict and optimiser steps), so it is built once per map
        size instead of once per forward. Under ``torch.compile`` it is built in the graph.
        """
        compiling = torch.compiler.is_compiling()
        cache = not compiling and not torch.is_grad_enabled()
        if cache:
            table = self.relative_position_bias_table
            key = (map_size, shift_mask is None, dtype, table.device, table.data_ptr(),
                   table._version)  # fmt: skip
            if self._mask_cache and self._mask_cache[0] == key:
                return self._mask_cache[1]
        mask = self.position_bias().unsqueeze(0)  # (1, heads, N, N): broadcasts over windows
        if shift_mask is not None:
            # Windows folded into the heads (see forward): (1, nW*heads, N, N), batch-free.
            n = mask.shape[-1]
            mask = (shift_mask.to(mask.dtype).unsqueeze(1) + mask).view(1, -1, n, n)
        mask = mask.to(dtype)
        if cache:
            self._mask_cache = (key, mask)
        return mask

    def forward(
        self,
        windows: Tensor,
        shift_mask: Tensor | None = None,
        map_size: tuple[int, int] = (0, 0),
    ) -> Tensor:
        """Attend within windows.

        Args:
            windows: ``(B*nW, N, C)`` tokens of every window, batch-major.
            shift_mask: ``(nW, N, N)`` additive mask of a shifted block, or None.
            map_size: padded ``(Hp, Wp)`` the windows come from (mask cache key).

        Returns:
            ``(B*nW, N, C)``.
        """
        bw, n, c = windows.shape
        heads = self.num_heads
        q, k, v = self.qkv(windows).view(bw, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        mask = self.attention_mask(shift_mask, map_size, q.dtype)
        if shift_mask is not None:
            # (B*nW, heads) -> (B, nW*heads): the per-window mask then broadcasts over the
            # batch instead of being repeated B times (B*nW*heads*N*N values per block).
            groups = bw // shift_mask.shape[0]
            q, k, v = (t.reshape(groups, -1, n, t.shape[-1]) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.view(bw, heads, n, -1)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """(Shifted) window attention + MLP, both pre-norm residual, on ``(B, H, W, C)`` maps."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        drop_path: float,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, hidden))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, H, W, C)`` -> ``(B, H, W, C)``."""
        b, h, w, c = x.shape
        ws, shift = self.window_size, self.shift_size
        y = self.norm1(x)
        # Pad after the norm, like the segmentation Swin: padded tokens are zeros, not masked.
        pad_h, pad_w = (-h) % ws, (-w) % ws
        if pad_h or pad_w:
            y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        gather, scatter, mask = window_tensors(h, w, ws, shift, x.device)
        # Shift + window partition as one row gather (and one back): several times faster on
        # CPU than roll + 6-d transpose copies.
        windows = y.reshape(b, hp * wp, c).index_select(1, gather).view(-1, ws * ws, c)
        y = self.attn(windows, mask, (hp, wp)).view(b, hp * wp, c).index_select(1, scatter)
        x = x + _drop_path(y.view(b, h, w, c), self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat + LayerNorm + linear: ``(B, H, W, C) -> (B, H/2, W/2, 2C)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[1:3]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # Order (top-left, bottom-left, top-right, bottom-right) is what the checkpoints expect.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Blocks of one stage (alternating plain/shifted windows) and the merging that follows."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_paths: Sequence[float],
        downsample: bool,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, 0 if j % 2 == 0 else window_size // 2,
                      mlp_ratio, drop_paths[j])
            for j in range(depth)
        )  # fmt: skip
        self.downsample = PatchMerging(dim) if downsample else None


class PatchEmbed(nn.Module):
    """4x4 non-overlapping patches -> ``embed_dim`` channels, then LayerNorm."""

    def __init__(self, embed_dim: int, patch_size: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, H/4, W/4, C)``."""
        h, w = image.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            image = F.pad(image, (0, (-w) % p, 0, (-h) % p))
        return self.norm(self.proj(image).permute(0, 2, 3, 1))


class SwinEncoder(VisionEncoder):
    """Swin backbone with the four-stage VisionEncoder interface (defaults: Swin-B, window 12).

    Args:
        embed_dim: channels C of stage 1; stages have C, 2C, 4C, 8C.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: window side (12 for the 384-px ImageNet-22k weights LAVT uses).
        drop_path_rate: stochastic depth, rising linearly from 0 to this over all blocks.
        mlp_ratio: MLP hidden size / channels.
        pretrained: local path to an official Swin ``.pth`` (``"model"`` key) or a transformers
            ``SwinModel`` directory / ``.safetensors`` file. Never downloads.

    ``forward_stage`` returns the raw blocks output (what LAVT fuses language into);
    :meth:`output_norm` applies the per-stage LayerNorm LAVT puts on the maps the decoder reads.
    ``forward`` (no fusion) returns the normalised maps.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: int = 12,
        drop_path_rate: float = 0.3,
        mlp_ratio: float = 4.0,
        pretrained: str | None = None,
    ):
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ModelError(f"Swin needs 4 stages, got depths={depths} num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.window_size = window_size
        self.out_channels = [embed_dim * 2**i for i in range(4)]
        self.strides = [4, 8, 16, 32]
        self.patch_embed = PatchEmbed(embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(4):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(self.out_channels[i], depths[i], num_heads[i], window_size, mlp_ratio,
                          rates[start : start + depths[i]], downsample=i < 3)
            )  # fmt: skip
        for i, channels in enumerate(self.out_channels):
            self.add_module(f"norm{i}", nn.LayerNorm(channels))
        self.apply(_init_weights)
        if pretrained:  # None, "" and False (the registry's 'no weights') skip loading
            load_swin_weights(self, pretrained)

    @staticmethod
    def _channels_last_view(x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, H, W, C)``; free when ``x`` is channels-last in memory."""
        return x.permute(0, 2, 3, 1).contiguous()

    def forward_stem(self, image: Tensor) -> Tensor:
        """``image``: ``(B, 3, H, W)`` -> stage-0 input ``(B, C, H/4, W/4)`` (channels-last memory)."""
        return self.patch_embed(image).permute(0, 3, 1, 2)

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        """Blocks of stage ``index``: ``(B, C_i, h, w)`` -> ``(B, C_i, h, w)`` (channels-last memory)."""
        y = self._channels_last_view(x)
        for block in self.layers[index].blocks:
            y = block(y)
        return y.permute(0, 3, 1, 2)

    def downsample(self, index: int, feature: Tensor) -> Tensor:
        """Patch merging: ``(B, C_i, h, w)`` -> ``(B, 2C_i, h/2, w/2)``."""
        merge = self.layers[index].downsample
        if merge is None:
            raise ModelError(f"Swin stage {index} is the last one and has no downsampling")
        return merge(feature.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def output_norm(self, index: int, feature: Tensor) -> Tensor:
        """LAVT's LayerNorm on a stage output map: ``(B, C_i, h, w)`` -> same shape."""
        norm = getattr(self, f"norm{index}")
        return norm(self._channels_last_view(feature)).permute(0, 3, 1, 2)

    def forward(self, image: Tensor) -> list[Tensor]:
        """``image``: ``(B, 3, H, W)`` -> four normalised maps ``(B, C_i, H/s_i, W/s_i)``."""
        return [self.output_norm(i, f) for i, f in enumerate(super().forward(image))]


def _init_weights(module: nn.Module) -> None:
    # Official Swin initialisation: truncated normal linears, unit LayerNorms.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
