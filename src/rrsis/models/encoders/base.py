"""Interfaces every vision and text encoder implements.

Models are assembled from ready-built parts (``LAVT(vision, text, fusions, decoder)``), so
fusion modules, LGCE, decoders and baselines depend only on these two contracts.
"""

from __future__ import annotations

from torch import Tensor, nn


class VisionEncoder(nn.Module):
    """A hierarchical image encoder with four stages (strides 4, 8, 16, 32).

    Attributes:
        out_channels: channels of the four stage outputs, e.g. ``[128, 256, 512, 1024]``.
        strides: ``[4, 8, 16, 32]``.

    Encoders that host language fusion between stages (LAVT) expose ``num_stages`` and
    ``forward_stage(i, x)``; ``forward_stem(image)`` gives the input of stage 0. ``forward``
    runs all stages without fusion and returns the four maps ``(B, C_i, H/s_i, W/s_i)``.
    """

    out_channels: list[int]
    strides: list[int] = [4, 8, 16, 32]
    num_stages: int = 4

    def forward_stem(self, image: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward_stage(self, index: int, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """Run stage ``index``.

        Returns:
            ``(feature, next_input)``: the stage's output map ``(B, C_i, h, w)`` (what fusion
            and the decoder see) and the tensor the next stage takes (after any downsampling).
            Fusion may replace ``feature``; the model then recomputes ``next_input`` with
            :meth:`downsample`.
        """
        raise NotImplementedError

    def downsample(self, index: int, feature: Tensor) -> Tensor:  # pragma: no cover
        """Turn stage ``index``'s (possibly fused) output into stage ``index + 1``'s input."""
        raise NotImplementedError

    def forward(self, image: Tensor) -> list[Tensor]:
        x = self.forward_stem(image)
        features = []
        for i in range(self.num_stages):
            feature, x = self.forward_stage(i, x)
            features.append(feature)
        return features


class TextEncoder(nn.Module):
    """Maps token ids to word features.

    Attributes:
        out_dim: feature size C of each word.
        max_tokens: default sequence length N the tokenizer pads/truncates to.

    ``forward(word_ids (B, N), word_mask (B, N)) -> words (B, N, C)``; padded positions
    (``word_mask == 0``) must be ignored by every consumer.
    ``tokenize(texts) -> (word_ids (B, N) long, word_mask (B, N) long)``.
    """

    out_dim: int
    max_tokens: int = 20

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError
