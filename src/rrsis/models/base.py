"""The base class every registered referring-segmentation model derives from.

The contract (DEVELOPERS.md): ``forward(image, word_ids, word_mask) -> logits (B, 2, H, W)`` at
input resolution, ``tokenize(texts)``, and the attributes ``config``, ``input_size``, ``mean``,
``std`` and ``size_divisor`` that training, inference and :mod:`rrsis.models.io` rely on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rrsis.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RRSISModel(nn.Module):
    """A model mapping an image and a referring expression to 2-class logits.

    Attributes:
        config: ``{"name": str, "kwargs": dict}``; ``get_model(name, **kwargs)`` rebuilds the
            architecture. Set by the registry after construction.
        input_size: default square side the model was designed for (e.g. 480).
        mean: per-channel mean of 0-1 RGB used for normalisation.
        std: per-channel standard deviation of 0-1 RGB.
        size_divisor: H and W must be multiples of it.
    """

    input_size: int = 480
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    size_divisor: int = 32

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {"name": type(self).__name__, "kwargs": {}}

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """Turn expressions into ``(word_ids (B, N) long, word_mask (B, N) long)``."""
        raise NotImplementedError

    def check_inputs(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> None:
        """Raise :class:`ModelError` with one line naming the first thing wrong with the inputs.

        Args:
            image: ``(B, 3, H, W)`` float, H and W multiples of :attr:`size_divisor`.
            word_ids: ``(B, N)`` integer token ids.
            word_mask: ``(B, N)`` integer mask, 1 for real tokens and 0 for padding; every
                expression needs at least one real token.
        """
        if not isinstance(image, Tensor) or image.ndim != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ModelError(f"image must be (B,3,H,W) float, got {shape}")
        if not image.is_floating_point():
            raise ModelError(f"image must be (B,3,H,W) float, got dtype {image.dtype}")
        height, width = image.shape[-2:]
        div = self.size_divisor
        if height % div or width % div:
            raise ModelError(f"H and W must be multiples of {div}, got {height}x{width}")
        for name, tensor in (("word_ids", word_ids), ("word_mask", word_mask)):
            if not isinstance(tensor, Tensor) or tensor.ndim != 2:
                shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ModelError(f"{name} must be (B,N) long, got {shape}")
            if tensor.is_floating_point():
                raise ModelError(f"{name} must be (B,N) long, got dtype {tensor.dtype}")
        if word_ids.shape != word_mask.shape:
            raise ModelError(
                f"word_ids and word_mask must have the same shape, got "
                f"{tuple(word_ids.shape)} and {tuple(word_mask.shape)}"
            )
        if word_ids.shape[0] != image.shape[0]:
            raise ModelError(
                f"batch sizes differ: image has {image.shape[0]}, words have {word_ids.shape[0]}"
            )
        # An empty expression has no sentence feature to fuse (LAVT's gates, LGCE, RRN's
        # sentence vector) and nothing to attend to (CMSA). A value check (it reads the data),
        # so it is skipped under torch.compile, where it would split the graph.
        if torch.compiler.is_compiling():
            return
        if not bool((word_mask.sum(dim=1) > 0).all()):
            raise ModelError("word_mask must mark at least one token per expression")

    def preprocess(self, images: np.ndarray | list[np.ndarray]) -> Tensor:
        """Normalise uint8 images to the model's input.

        Args:
            images: ``(B, H, W, 3)`` uint8 array, or a list of ``(H, W, 3)`` arrays of one size.

        Returns:
            ``(B, 3, H, W)`` float tensor normalised with :attr:`mean` and :attr:`std`.
        """
        array = np.stack(list(images)) if isinstance(images, list) else np.asarray(images)
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ModelError(f"images must be (B,H,W,3) uint8, got {array.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (tensor - mean) / std

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
