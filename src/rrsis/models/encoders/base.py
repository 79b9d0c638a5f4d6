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

    Language fusion sits between stages (LAVT): ``forward_stem(image)`` gives stage 0's input,
    ``forward_stage(i, x)`` runs stage i's blocks, ``downsample(i, feature)`` makes the next
    stage's input from the (fused) output. Maps are channels-first ``(B, C_i, H/s_i, W/s_i)``.
    ``forward`` runs all stages without fusion and returns the four maps.
    """

    out_channels: list[int]
    strides: list[int] = [4, 8, 16, 32]
    num_stages: int = 4

    def forward_stem(self, image: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward_stage(self, index: int, x: Tensor) -> Tensor:  # pragma: no cover - interface
        """Run the blocks of stage ``index`` (no downsampling).

        Returns the stage's output map ``(B, C_i, H/s_i, W/s_i)``: what language fusion and the
        decoder see. Fusion may change it before :meth:`downsample` turns it into the next input.
        """
        raise NotImplementedError

    def downsample(self, index: int, feature: Tensor) -> Tensor:  # pragma: no cover - interface
        """Turn stage ``index``'s (possibly fused) output into stage ``index + 1``'s input.

        Identity for encoders whose next stage downsamples by itself (EfficientNet).
        """
        raise NotImplementedError

    def forward(self, image: Tensor) -> list[Tensor]:
        x = self.forward_stem(image)
        features = []
        for i in range(self.num_stages):
            feature = self.forward_stage(i, x)
            features.append(feature)
            if i + 1 < self.num_stages:
                x = self.downsample(i, feature)
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
