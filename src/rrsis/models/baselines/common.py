"""Pieces shared by the re-implemented natural-image baselines.

The early referring-segmentation methods (Hu et al. 2016, RRN, CMSA) all append an 8-channel
spatial coordinate map to the visual features and L2-normalise visual and language features
before fusing them; those two helpers live here so every baseline computes them the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis.models.base import RRSISModel
from rrsis.models.encoders.base import TextEncoder, VisionEncoder
from rrsis.models.lgce import masked_mean  # noqa: F401  (re-exported for the baselines)

#: Channels of :func:`spatial_coordinates`.
COORD_CHANNELS = 8


def spatial_coordinates(
    height: int,
    width: int,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The 8-D per-cell location feature of Hu et al. (ECCV 2016), reused by RRN and CMSA.

    For each cell of an ``height x width`` grid: normalised ``x_min, x_center, x_max, y_min,
    y_center, y_max`` in ``[-1, 1]`` followed by ``1 / width`` and ``1 / height`` (the cell size),
    so expressions such as "on the left" can be grounded without positional embeddings.

    Args:
        height: rows of the feature map.
        width: columns of the feature map.
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        ``(1, 8, height, width)`` coordinate map (broadcast over the batch).
    """
    xs = torch.arange(width, device=device, dtype=dtype)
    ys = torch.arange(height, device=device, dtype=dtype)
    x_min = xs / width * 2 - 1
    x_max = (xs + 1) / width * 2 - 1
    y_min = ys / height * 2 - 1
    y_max = (ys + 1) / height * 2 - 1
    x_rows = torch.stack([x_min, (x_min + x_max) / 2, x_max])[:, None, :].expand(3, height, width)
    y_cols = torch.stack([y_min, (y_min + y_max) / 2, y_max])[:, :, None].expand(3, height, width)
    size = torch.tensor([1.0 / width, 1.0 / height], device=device, dtype=dtype)
    size = size[:, None, None].expand(2, height, width)
    return torch.cat([x_rows, y_cols, size], dim=0).unsqueeze(0)


def trim_padding(words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop trailing positions that are padding in every row of the batch.

    Cross-modal attention costs grow with N x pixels, and expressions are much shorter than the
    tokenizer's padded length, so cutting the common padding tail saves most of the work without
    changing the result (padded words are masked out anyway).

    Args:
        words: ``(B, N, C)``.
        word_mask: ``(B, N)``.

    Returns:
        ``(words (B, N', C), word_mask (B, N'))`` with ``N' = max real length`` (at least 1).
    """
    valid = word_mask.bool().any(0)
    keep = int(valid.nonzero().max().item()) + 1 if bool(valid.any()) else 1
    return words[:, :keep], word_mask[:, :keep]


def l2_normalize(x: Tensor, dim: int = 1) -> Tensor:
    """L2-normalise along ``dim``; Hu et al. and CMSA do this so neither modality dominates."""
    return F.normalize(x, p=2.0, dim=dim, eps=1e-6)


class BaselineModel(RRSISModel):
    """Encoders + a fusion head predicting coarse logits, upsampled to the input size.

    The natural-image baselines fuse language only after the visual encoder has run (unlike
    LAVT, which fuses between stages), so they share this wrapper and differ only in the head.

    Args:
        vision: four-stage visual encoder.
        text: word-feature encoder (its ``tokenize`` is the model's).
        head: module ``(features, words (B, N, C), word_mask (B, N)) -> (B, 2, h, w)``.
        input_size: default square input side.
    """

    def __init__(
        self, vision: VisionEncoder, text: TextEncoder, head: nn.Module, input_size: int = 480
    ) -> None:
        super().__init__()
        self.vision = vision
        self.text = text
        self.head = head
        self.input_size = input_size

    @property
    def use_coords(self) -> bool:
        """Whether the spatial coordinate channels carry coordinates (``False``: zeros)."""
        return bool(self.head.use_coords)

    @use_coords.setter
    def use_coords(self, value: bool) -> None:
        self.head.use_coords = bool(value)

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Expressions -> ``(word_ids (B, N) long, word_mask (B, N) long)``."""
        return self.text.tokenize(texts)

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        """Segment the referred object.

        Args:
            image: ``(B, 3, H, W)`` normalised image, H and W multiples of 32.
            word_ids: ``(B, N)`` token ids.
            word_mask: ``(B, N)``, 1 for real tokens.

        Returns:
            ``(B, 2, H, W)`` logits (background, object).
        """
        self.check_inputs(image, word_ids, word_mask)
        features = self.vision(image)
        words = self.text(word_ids, word_mask)
        logits = self.head(features, words, word_mask)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
