"""RMSIN (Liu et al., CVPR 2024): LAVT with a visual branch per stage, a cross-scale
interaction module and a decoder of adaptive rotated convolutions.

words = text(word_ids, word_mask)                           (B, N, C_l)
x = vision.forward_stem(image)
for stage i:  f = vision.forward_stage(i, x)                 (B, C_i, H/s_i, W/s_i)
              r = fusions[i](f, words, word_mask)             PWAM residual (as LAVT)
              v = visual_branches[i](f)                       spatially re-weighted f
              x = f + gates[i](r) * r + visual_gates[i](v) * v    intra-scale interaction
              maps[i] = norm_i(r);    x = vision.downsample(i, x)
maps = cim(maps)                                              cross-scale interaction
logits = decoder(maps)                                        rotated decoder, (B, 2, H/4, W/4)
logits = up(logits)                                           bilinear, align_corners=True

The official code (Lsan2401/RMSIN) is what this follows where it and the paper differ
(docs/models.md lists the differences); ``rrsis models convert-rmsin`` reads its checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from rrsis.errors import ModelError
from rrsis.models.encoders.base import TextEncoder, VisionEncoder
from rrsis.models.encoders.presets import (
    effnet_minilm_encoders,
    extend_signature,
    swin_bert_encoders,
)
from rrsis.models.fusion import LanguageGate, PixelWordAttention
from rrsis.models.lavt import LAVT
from rrsis.models.rmsin_modules import CrossScaleInteraction, ReceptiveBranch
from rrsis.models.rotated_conv import RotatedDecoder


class RMSIN(LAVT):
    """Rotated multi-scale interaction network.

    Args:
        vision: four-stage encoder.
        text: word encoder.
        fusions: one PWAM per stage.
        gates: one language gate per stage (on the PWAM residual).
        visual_branches: one :class:`~rrsis.models.rmsin_modules.ReceptiveBranch` per stage.
        visual_gates: one gate per stage (on the visual branch).
        cim: the cross-scale interaction module (``maps -> maps``).
        decoder: :class:`~rrsis.models.rotated_conv.RotatedDecoder`.
        input_size: default square input side.
    """

    def __init__(
        self,
        vision: VisionEncoder,
        text: TextEncoder,
        fusions: Sequence[nn.Module],
        gates: Sequence[nn.Module],
        visual_branches: Sequence[nn.Module],
        visual_gates: Sequence[nn.Module],
        cim: nn.Module,
        decoder: nn.Module,
        input_size: int = 480,
    ) -> None:
        super().__init__(
            vision, text, fusions, gates, decoder, input_size=input_size, align_corners=True
        )
        if len(visual_branches) != vision.num_stages or len(visual_gates) != vision.num_stages:
            raise ModelError(
                f"need {vision.num_stages} visual branches and gates, got "
                f"{len(visual_branches)} and {len(visual_gates)}"
            )
        self.visual_branches = nn.ModuleList(visual_branches)
        self.visual_gates = nn.ModuleList(visual_gates)
        self.cim = cim

    def encode_words(self, image: Tensor, words: Tensor, word_mask: Tensor) -> list[Tensor]:
        """Language-aware encoder with the visual branches, then the CIM: four maps
        ``(B, C_i, H/s_i, W/s_i)`` (``forward``, ``encode`` and ``forward_words`` run it)."""
        x = self.vision.forward_stem(image)
        maps = []
        for i in range(self.vision.num_stages):
            feature = self.vision.forward_stage(i, x)
            visual = self.visual_branches[i](feature)
            residual = self.fusions[i](feature, words, word_mask)
            fused = (
                feature + self.gates[i](residual) * residual + self.visual_gates[i](visual) * visual
            )
            if self.norms is None:
                maps.append(self.vision.output_norm(i, residual))
            else:
                maps.append(self.norms[i](residual))
            if i + 1 < self.vision.num_stages:
                x = self.vision.downsample(i, fused)
        return self.cim(maps)


def assemble_rmsin(
    vision: VisionEncoder,
    text: TextEncoder,
    decoder_channels: int,
    input_size: int,
    cim_grid: int,
) -> RMSIN:
    """RMSIN on ``vision`` and ``text``: per-stage PWAM, gates and visual branch, CIM, decoder.

    Args:
        vision: the visual encoder (its ``out_channels`` size every module).
        text: the text encoder (``out_dim`` word features).
        decoder_channels: width of the rotated decoder.
        input_size: default square input side.
        cim_grid: side of the token grid the CIM pools every stage map to (its attention has
            weights for exactly that many tokens). The official code: 15, the stride-32 map of
            its 480 px input; best set to ``training size // 32``.
    """
    if cim_grid < 1:
        raise ModelError(f"RMSIN cim_grid must be positive, got {cim_grid}")
    channels = list(vision.out_channels)
    return RMSIN(
        vision,
        text,
        fusions=[PixelWordAttention(c, text.out_dim) for c in channels],
        gates=[LanguageGate(c) for c in channels],
        visual_branches=[ReceptiveBranch() for _ in channels],
        visual_gates=[LanguageGate(c) for c in channels],
        cim=CrossScaleInteraction(channels, grid=cim_grid),
        decoder=RotatedDecoder(channels, hidden=decoder_channels),
        input_size=input_size,
    )


def rmsin_swin_base(
    decoder_channels: int = 512, input_size: int = 480, cim_grid: int = 15, **encoder_kwargs: Any
) -> RMSIN:
    """RMSIN with Swin-B and BERT-base, as the official code builds it.

    Args:
        decoder_channels: width of the rotated decoder (official: C4 / 2 = 512).
        input_size: default square input side (official: 480).
        cim_grid: CIM token grid side (official: 15, i.e. 480 / 32).
        **encoder_kwargs: :func:`~rrsis.models.encoders.presets.swin_bert_encoders` arguments
            (``pretrained`` local Swin checkpoint, ``text_pretrained`` local BERT, sizes).
    """
    vision, text = swin_bert_encoders(**encoder_kwargs)
    return assemble_rmsin(vision, text, decoder_channels, input_size, cim_grid)


def rmsin_effnet_minilm(
    decoder_channels: int = 64, input_size: int = 512, cim_grid: int = 10, **encoder_kwargs: Any
) -> RMSIN:
    """CPU model: RMSIN's modules on EfficientNet-Lite with a frozen MiniLM text encoder.

    Args:
        decoder_channels: width of the rotated decoder.
        input_size: default square input side.
        cim_grid: CIM token grid side (10: the stride-32 map of the CPU recipe's 320 px).
        **encoder_kwargs: :func:`~rrsis.models.encoders.presets.effnet_minilm_encoders`
            arguments (``variant``, ``pretrained``, ``text_pretrained``, ``freeze_text``,
            ``text_layers``, ``max_tokens``).
    """
    vision, text = effnet_minilm_encoders(**encoder_kwargs)
    return assemble_rmsin(vision, text, decoder_channels, input_size, cim_grid)


extend_signature(rmsin_swin_base, swin_bert_encoders)
extend_signature(rmsin_effnet_minilm, effnet_minilm_encoders)
