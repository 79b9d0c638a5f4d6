"""LAVT (Yang et al., CVPR 2022) assembled from ready-built parts, optionally with an LGCE neck.

words = text(word_ids, word_mask)                          (B, N, C_l)
x = vision.forward_stem(image)
for stage i:  f = vision.forward_stage(i, x)                (B, C_i, H/s_i, W/s_i)
              r = fusions[i](f, words, word_mask)            PWAM residual
              x = f + gates[i](r) * r                        language gate
              maps[i] = norm_i(r);    x = vision.downsample(i, x)
maps = neck(maps, words, word_mask)                          LGCE (identity for LAVT)
logits = decoder(maps)                                       (B, 2, H/4, W/4)
logits[:, 1] += prior(words, word_mask)                      optional spatial prior
logits = up(logits)                                          (B, 2, H, W)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis.errors import ModelError
from rrsis.models.base import RRSISModel
from rrsis.models.encoders.base import TextEncoder, VisionEncoder


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (LAVT normalises each stage output)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LAVT(RRSISModel):
    """Language-aware vision transformer for referring segmentation.

    Args:
        vision: four-stage encoder (``VisionEncoder``).
        text: word encoder (``TextEncoder``).
        fusions: one PWAM per stage, ``(B, C_i, h, w), (B, N, C_l), (B, N) -> (B, C_i, h, w)``.
        gates: one language gate per stage.
        decoder: maps the four fused maps to logits at 1/4 resolution.
        neck: optional module ``(maps, words, word_mask) -> maps`` between encoder and decoder
            (LGCE); ``None`` gives plain LAVT.
        prior: optional module ``(words, word_mask, size) -> (B, 1, *size)`` added to the
            foreground logit (:class:`~rrsis.models.fusion.SpatialPrior`); ``None`` = none.
        input_size: default square input side.
        align_corners: ``align_corners`` of the final upsampling of the 1/4-resolution logits
            (the official LAVT code: True; our own models are trained with False).
    """

    def __init__(
        self,
        vision: VisionEncoder,
        text: TextEncoder,
        fusions: Sequence[nn.Module],
        gates: Sequence[nn.Module],
        decoder: nn.Module,
        neck: nn.Module | None = None,
        input_size: int = 480,
        prior: nn.Module | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.align_corners = align_corners
        stages = vision.num_stages
        if len(fusions) != stages or len(gates) != stages:
            raise ModelError(
                f"need {stages} fusion modules and gates, got {len(fusions)} and {len(gates)}"
            )
        self.vision = vision
        self.text = text
        self.fusions = nn.ModuleList(fusions)
        self.gates = nn.ModuleList(gates)
        # LAVT normalises each map the decoder reads; an encoder that owns these norms (Swin,
        # whose checkpoints name them) provides `output_norm`, otherwise the model holds them.
        self.norms = (
            None
            if hasattr(vision, "output_norm")
            else nn.ModuleList(LayerNorm2d(c) for c in vision.out_channels)
        )
        self.neck = neck
        self.decoder = decoder
        self.prior = prior
        self.input_size = input_size

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Tokenise expressions with the text encoder's tokenizer: ``(B, N)`` ids and mask."""
        return self.text.tokenize(texts)

    def encode(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> list[Tensor]:
        """Run the language-aware encoder (and neck).

        Returns:
            four maps ``(B, C_i, H/s_i, W/s_i)`` for the decoder.
        """
        return self._encode(image, word_ids, word_mask)[0]

    def _encode(
        self, image: Tensor, word_ids: Tensor, word_mask: Tensor
    ) -> tuple[list[Tensor], Tensor]:
        words = self.text(word_ids, word_mask)  # (B, N, C_l)
        return self.encode_words(image, words, word_mask), words

    def encode_words(self, image: Tensor, words: Tensor, word_mask: Tensor) -> list[Tensor]:
        """The language-aware encoder from word features: the maps the decoder reads.

        Subclasses that change the encoder (RMSIN) override this one method, so ``forward``,
        ``encode`` and ``forward_words`` (cached word features, the ONNX graph) all run it.
        """
        x = self.vision.forward_stem(image)
        maps = []
        for i in range(self.vision.num_stages):
            feature = self.vision.forward_stage(i, x)
            residual = self.fusions[i](feature, words, word_mask)
            fused = feature + self.gates[i](residual) * residual
            if self.norms is None:
                maps.append(self.vision.output_norm(i, residual))
            else:
                maps.append(self.norms[i](residual))
            if i + 1 < self.vision.num_stages:
                x = self.vision.downsample(i, fused)
        if self.neck is not None:
            maps = self.neck(maps, words, word_mask)
        return maps

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        """Segment the referred object.

        Args:
            image: ``(B, 3, H, W)`` normalised float, H and W multiples of 32.
            word_ids: ``(B, N)`` long token ids.
            word_mask: ``(B, N)`` long, 1 for tokens, 0 for padding.

        Returns:
            logits ``(B, 2, H, W)``.
        """
        self.check_inputs(image, word_ids, word_mask)
        return self.forward_words(image, self.text(word_ids, word_mask), word_mask)

    def forward_words(self, image: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """:meth:`forward` from word features ``words (B, N, C_l)`` of the text encoder.

        The part that runs per image: an expression's words can be encoded once for many
        tiles (the ONNX graph of :mod:`rrsis.models.onnx_export` is this method).
        """
        maps = self.encode_words(image, words, word_mask)
        logits = self.decoder(maps)
        if self.prior is not None:
            offsets = self.prior(words, word_mask, logits.shape[-2:]).to(logits.dtype)
            logits = torch.cat([logits[:, :1], logits[:, 1:] + offsets], dim=1)
        return F.interpolate(
            logits, size=image.shape[-2:], mode="bilinear", align_corners=self.align_corners
        )
