"""RRN: early fusion by tiling + recurrent refinement over the feature pyramid.

Compact re-implementation of two related methods the RRSIS paper benchmarks against:

* R. Hu, M. Rohrbach, T. Darrell, "Segmentation from Natural Language Expressions", ECCV 2016:
  the sentence vector of an LSTM is tiled over the deepest visual map together with an 8-channel
  spatial coordinate map; a 1x1-conv MLP fuses the three (L2-normalised) inputs per pixel.
* R. Li, K. Li, Y.-C. Kuo, M. Shu, X. Qi, X. Shen, J. Jia, "Referring Image Segmentation via
  Recurrent Refinement Networks", CVPR 2018: the fused map initialises a convolutional LSTM that
  reads the visual pyramid from deep to shallow, refining the mask at each step.

Differences from the originals, chosen for a CPU-sized benchmark: the ConvLSTM state is
upsampled to each pyramid level (instead of resizing all levels to one size), so the last step
runs at stride 4 with a narrow state; words come from the frozen text encoder rather than
learned embeddings, and a small trainable LSTM turns them into the sentence vector.
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
    spatial_coordinates,
)
from rrsis.models.encoders.base import TextEncoder, VisionEncoder
from rrsis.models.encoders.presets import (
    effnet_minilm_encoders,
    extend_signature,
    swin_bert_encoders,
)


class SentenceLSTM(nn.Module):
    """Sentence vector = the LSTM hidden state after the last real word.

    Args:
        in_dim: word feature size C.
        hidden_dim: LSTM state size D.
    """

    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden_dim, batch_first=True)
        self.out_dim = hidden_dim

    def forward(self, words: Tensor, word_mask: Tensor) -> Tensor:
        """Encode a sentence.

        Args:
            words: ``(B, N, C)`` word features.
            word_mask: ``(B, N)``, 1 for real tokens.

        Returns:
            ``(B, D)`` state at each row's last real token (row 0's output for empty rows).
        """
        outputs, _ = self.lstm(words)
        # Padding sits at the end, so the last real token is at length - 1; reading it there
        # (instead of the final step) keeps padding from leaking into the sentence vector.
        last = (word_mask.long().sum(1) - 1).clamp_min(0)
        return outputs[torch.arange(words.shape[0], device=words.device), last]


class TileFusion(nn.Module):
    """Hu et al.'s fusion: tile ``[visual, sentence, coordinates]`` and apply a 1x1-conv MLP.

    Args:
        visual_dim: channels of the visual map.
        sentence_dim: size of the sentence vector.
        hidden_dim: width of the MLP.
        out_dim: channels of the fused map.
    """

    def __init__(self, visual_dim: int, sentence_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(visual_dim + sentence_dim + COORD_CHANNELS, hidden_dim, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, out_dim, 1),
        )

    def forward(self, visual: Tensor, sentence: Tensor, coords: Tensor) -> Tensor:
        """Fuse per pixel.

        Args:
            visual: ``(B, Cv, h, w)``.
            sentence: ``(B, D)``.
            coords: ``(B or 1, 8, h, w)``.

        Returns:
            ``(B, out_dim, h, w)``.
        """
        b, _, h, w = visual.shape
        tiled = l2_normalize(sentence, dim=1)[:, :, None, None].expand(b, -1, h, w)
        coords = coords.expand(b, -1, h, w)
        return self.mlp(torch.cat([l2_normalize(visual, dim=1), tiled, coords], dim=1))


class ConvLSTMCell(nn.Module):
    """One convolutional LSTM step: gates from a conv over ``[input, hidden]``.

    Args:
        in_dim: channels of the input.
        hidden_dim: channels of hidden and cell state.
        kernel_size: odd kernel of the gate convolution.
    """

    def __init__(self, in_dim: int, hidden_dim: int, kernel_size: int = 3):
        super().__init__()
        self.gates = nn.Conv2d(
            in_dim + hidden_dim, 4 * hidden_dim, kernel_size, padding=kernel_size // 2
        )
        # Forget-gate bias 1 (the usual LSTM initialisation): the language-conditioned state that
        # seeds the refinement would otherwise be halved at every level before training starts.
        with torch.no_grad():
            self.gates.bias[hidden_dim : 2 * hidden_dim].fill_(1.0)

    def forward(self, x: Tensor, hidden: Tensor, cell: Tensor) -> tuple[Tensor, Tensor]:
        """Args: ``x (B, in_dim, h, w)``, ``hidden``/``cell (B, hidden_dim, h, w)``.

        Returns:
            New ``(hidden, cell)``, each ``(B, hidden_dim, h, w)``.
        """
        i, f, o, g = self.gates(torch.cat([x, hidden], dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        return hidden, cell


class RRNHead(nn.Module):
    """Language fusion + recurrent refinement; the part of RRN that sits on the encoders.

    Args:
        visual_channels: channels of the four encoder stages (strides 4, 8, 16, 32).
        word_dim: word feature size C of the text encoder.
        sentence_dim: LSTM state size.
        fusion_dim: hidden width of the tiling MLP.
        refine_dim: ConvLSTM state width (the refinement runs up to stride 4, so keep it narrow).
        refine_levels: how many pyramid levels the ConvLSTM reads, deepest first (1-4).
        kernel_size: ConvLSTM gate kernel.
        use_coords: append the spatial coordinates; ``False`` feeds zeros instead (same weights),
            so the switch can be flipped on a trained model for ablation.
    """

    def __init__(
        self,
        visual_channels: list[int],
        word_dim: int,
        *,
        sentence_dim: int = 256,
        fusion_dim: int = 256,
        refine_dim: int = 32,
        refine_levels: int = 4,
        kernel_size: int = 3,
        use_coords: bool = True,
    ):
        super().__init__()
        if not 1 <= refine_levels <= len(visual_channels):
            raise ModelError(
                f"refine_levels must be in 1..{len(visual_channels)}, got {refine_levels}"
            )
        self.use_coords = use_coords
        self.refine_levels = refine_levels
        self.sentence = SentenceLSTM(word_dim, sentence_dim)
        self.fusion = TileFusion(visual_channels[-1], sentence_dim, fusion_dim, 2 * refine_dim)
        # Deepest first, as the ConvLSTM reads them.
        levels = list(reversed(range(len(visual_channels))))[:refine_levels]
        self.levels = levels
        self.inputs = nn.ModuleList(nn.Conv2d(visual_channels[i], refine_dim, 1) for i in levels)
        self.cell = ConvLSTMCell(refine_dim, refine_dim, kernel_size)
        self.classifier = nn.Conv2d(refine_dim, 2, 1)

    def coordinates(self, like: Tensor) -> Tensor:
        """``(1, 8, h, w)`` coordinates for a map shaped like ``like`` (zeros when disabled)."""
        coords = spatial_coordinates(*like.shape[-2:], device=like.device, dtype=like.dtype)
        return coords if self.use_coords else torch.zeros_like(coords)

    def forward(self, features: list[Tensor], words: Tensor, word_mask: Tensor) -> Tensor:
        """Predict coarse logits.

        Args:
            features: four maps ``(B, C_i, H/s_i, W/s_i)``, strides 4, 8, 16, 32.
            words: ``(B, N, C)``.
            word_mask: ``(B, N)``.

        Returns:
            ``(B, 2, H/s, W/s)`` logits at the stride of the shallowest level read.
        """
        deepest = features[-1]
        sentence = self.sentence(words, word_mask)
        # The fused map seeds both LSTM states: hidden carries the language-conditioned
        # response, cell its memory, as RRN initialises the refinement from the fusion result.
        hidden, cell = self.fusion(deepest, sentence, self.coordinates(deepest)).chunk(2, dim=1)
        hidden, cell = torch.tanh(hidden), cell
        for proj, level in zip(self.inputs, self.levels):
            feature = features[level]
            if hidden.shape[-2:] != feature.shape[-2:]:
                size = feature.shape[-2:]
                hidden = F.interpolate(hidden, size=size, mode="bilinear", align_corners=False)
                cell = F.interpolate(cell, size=size, mode="bilinear", align_corners=False)
            hidden, cell = self.cell(proj(feature), hidden, cell)
        return self.classifier(hidden)


class RRN(BaselineModel):
    """RRN (Li et al., CVPR 2018) on top of Hu et al.'s tiling fusion (ECCV 2016).

    ``forward(image (B, 3, H, W), word_ids (B, N), word_mask (B, N)) -> logits (B, 2, H, W)``.

    Args:
        vision: four-stage visual encoder (strides 4, 8, 16, 32).
        text: word-feature encoder.
        input_size: default square input side.
        **head_kwargs: :class:`RRNHead` options (``sentence_dim``, ``fusion_dim``,
            ``refine_dim``, ``refine_levels``, ``kernel_size``, ``use_coords``).
    """

    def __init__(
        self, vision: VisionEncoder, text: TextEncoder, input_size: int = 480, **head_kwargs: Any
    ) -> None:
        head = RRNHead(list(vision.out_channels), text.out_dim, **head_kwargs)
        super().__init__(vision, text, head, input_size=input_size)


def rrn_effnet_minilm(
    input_size: int = 512,
    sentence_dim: int = 256,
    fusion_dim: int = 256,
    refine_dim: int = 32,
    refine_levels: int = 4,
    kernel_size: int = 3,
    use_coords: bool = True,
    **encoder_kwargs: Any,
) -> RRN:
    """RRN on EfficientNet-Lite + frozen MiniLM (the CPU benchmark configuration).

    Args:
        input_size: default square input side.
        sentence_dim, fusion_dim, refine_dim, refine_levels, kernel_size, use_coords:
            see :class:`RRNHead`.
        **encoder_kwargs: :func:`~rrsis.models.encoders.presets.effnet_minilm_encoders` arguments.
    """
    vision, text = effnet_minilm_encoders(**encoder_kwargs)
    return RRN(
        vision, text, input_size=input_size, sentence_dim=sentence_dim, fusion_dim=fusion_dim,
        refine_dim=refine_dim, refine_levels=refine_levels, kernel_size=kernel_size,
        use_coords=use_coords,
    )  # fmt: skip


def rrn_swin_base(
    input_size: int = 480,
    sentence_dim: int = 512,
    fusion_dim: int = 512,
    refine_dim: int = 64,
    refine_levels: int = 4,
    kernel_size: int = 3,
    use_coords: bool = True,
    **encoder_kwargs: Any,
) -> RRN:
    """RRN on the paper's encoders, Swin-B + BERT-base (weights only from local paths).

    Args:
        input_size: default square input side.
        sentence_dim, fusion_dim, refine_dim, refine_levels, kernel_size, use_coords:
            see :class:`RRNHead`.
        **encoder_kwargs: :func:`~rrsis.models.encoders.presets.swin_bert_encoders` arguments.
    """
    vision, text = swin_bert_encoders(**encoder_kwargs)
    return RRN(
        vision, text, input_size=input_size, sentence_dim=sentence_dim, fusion_dim=fusion_dim,
        refine_dim=refine_dim, refine_levels=refine_levels, kernel_size=kernel_size,
        use_coords=use_coords,
    )  # fmt: skip


extend_signature(rrn_effnet_minilm, effnet_minilm_encoders)
extend_signature(rrn_swin_base, swin_bert_encoders)
