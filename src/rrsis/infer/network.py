"""The network's side of inference: expressions checked, images normalised, batched forwards.

:class:`Network` knows nothing of windows or composition rules; :class:`~rrsis.infer.predictor.Segmenter`
adds those.
"""

from __future__ import annotations

import unicodedata
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rrsis.data.known_words import unknown_words
from rrsis.errors import ExpressionError, ModelError
from rrsis.models.speed import fuse_for_inference

#: Side of the image that finds and checks the batch norms to fold (see :meth:`Network.fuse`).
PROBE_SIDE = 64


def _is_non_latin(text: str) -> bool:
    for char in text:
        if char.isalpha() and not unicodedata.name(char, "").startswith("LATIN"):
            return True
    return False


def clean_expressions(expressions: Sequence[str], stacklevel: int = 2) -> list[str]:
    """Expressions with their whitespace collapsed; warns about non-Latin characters.

    Raises:
        ExpressionError: an empty expression (or one that is not a string).
    """
    cleaned = []
    for expression in expressions:
        if not isinstance(expression, str) or not expression.strip():
            raise ExpressionError(f"empty referring expression: {expression!r}")
        expression = " ".join(expression.split())
        if _is_non_latin(expression):
            warnings.warn(
                f"expression {expression!r} has non-Latin characters; the English tokenizer "
                "maps them to unknown tokens",
                UserWarning,
                stacklevel=stacklevel + 1,
            )
        cleaned.append(expression)
    return cleaned


def unknown_by_expression(
    model: torch.nn.Module, expressions: Sequence[str], stacklevel: int = 2
) -> dict[str, tuple[str, ...]]:
    """Each expression's content words outside ``model.vocabulary`` (none without one), with
    one warning per expression that has any: its mask is a guess."""
    vocabulary = getattr(model, "vocabulary", None)
    found = {e: unknown_words(e, vocabulary) if vocabulary else () for e in expressions}
    for expression, words in found.items():
        if words:
            warnings.warn(
                f"expression {expression!r} has words the model was not trained on: "
                f"{', '.join(words)}; its mask is a guess",
                UserWarning,
                stacklevel=stacklevel + 1,
            )
    return found


def warn_truncated(
    expressions: Sequence[str], word_mask: torch.Tensor, stacklevel: int = 2
) -> None:
    """Warn about each expression whose tokens ``word_mask (E, N)`` fill every slot."""
    n_tokens = word_mask.shape[1]
    for expression, used in zip(expressions, word_mask.sum(dim=1).tolist()):
        # A sequence that uses every slot was (almost surely) cut by the tokenizer.
        if used >= n_tokens and len(expression.split()) > 1:
            warnings.warn(
                f"expression {expression[:40]!r} is longer than the model's {n_tokens} "
                "tokens and was truncated",
                UserWarning,
                stacklevel=stacklevel + 1,
            )


def normalise(tiles: np.ndarray, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``uint8 (B, H, W, 3)`` -> the model's normalised ``(B, 3, size, size)`` input.

    ``mean`` and ``std`` are ``(1, 3, 1, 1)`` tensors on the model's device.
    """
    # Writable copy only when needed (PIL arrays are read-only; torch warns on those).
    images = torch.from_numpy(np.require(tiles, requirements=["C", "W"])).to(mean.device)
    images = images.permute(0, 3, 1, 2).float().div_(255.0)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return (images - mean) / std


@torch.inference_mode()
def forward_rows(
    model: torch.nn.Module,
    images: torch.Tensor,
    word_ids: torch.Tensor,
    word_mask: torch.Tensor,
    size: tuple[int, int],
    max_rows: int,
    bfloat16: bool = False,
) -> np.ndarray:
    """Foreground probabilities ``float32 (R, *size)`` of ``R`` (image, expression) rows.

    Args:
        model: returns 2-class logits ``(R, 2, h, w)``.
        images: ``(R, 3, S, S)`` normalised; ``word_ids``, ``word_mask``: ``(R, N)``.
        size: ``(H, W)`` the probabilities are resized to.
        max_rows: most rows per forward.
        bfloat16: run the model under bfloat16 autocast.
    """
    out = np.empty((images.shape[0], *size), np.float32)
    device = images.device
    # At most `max_rows` pairs per forward: activations grow with the batch (~40 MB per
    # 320 px pair for the shipped model), and several expressions multiply it.
    for start in range(0, images.shape[0], max_rows):
        rows = slice(start, start + max_rows)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bfloat16):
            logits = model(images[rows], word_ids[rows], word_mask[rows])
        if logits.ndim != 4 or logits.shape[1] != 2:
            raise ModelError(f"model must return logits (B, 2, H, W), got {tuple(logits.shape)}")
        # softmax(l)[1] == sigmoid(l1 - l0); bilinear resizing is linear, so resizing the
        # difference alone gives the same result at half the cost.
        margin = (logits[:, 1:2] - logits[:, 0:1]).float()
        if margin.shape[-2:] != size:
            margin = F.interpolate(margin, size=size, mode="bilinear", align_corners=False)
        out[rows] = torch.sigmoid(margin)[:, 0].cpu().numpy()
    return out


class Network:
    """A model ready for inference: normalised inputs, batched forwards, probabilities.

    Args:
        model: a model following the RRSISModel contract (``forward``, ``tokenize``, ``mean``,
            ``std``, ``input_size``, ``size_divisor``).
        device: torch device.
        input_size: square side images are resized to; ``None`` uses ``model.input_size``.
        dtype: ``torch.float32`` or ``torch.bfloat16`` (autocast).
        fuse: fold the model's batch norms into its convolutions (rewrites ``model``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        input_size: int | None = None,
        dtype: torch.dtype = torch.float32,
        fuse: bool = False,
    ) -> None:
        if dtype not in (torch.float32, torch.bfloat16):
            raise ModelError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = dtype
        size = int(input_size if input_size is not None else model.input_size)
        divisor = int(getattr(model, "size_divisor", 1) or 1)
        if size % divisor:
            raise ModelError(f"input_size must be a multiple of {divisor}, got {size}")
        self.input_size = size
        self.mean = (
            torch.as_tensor(model.mean, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        )
        self.std = torch.as_tensor(model.std, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        #: Most (image, expression) pairs per network forward (bounds peak memory).
        self.max_rows = 8
        self.fused: dict[str, int] = self.fuse() if fuse else {}

    def fuse(self) -> dict[str, int]:
        """Fold batch norms into convolutions (:func:`rrsis.models.speed.fuse_for_inference`).

        The example that finds the (conv, norm) pairs and checks the folded model is a small
        image (:data:`PROBE_SIDE` px): what is folded does not depend on its size, and a
        full-size probe costs two full forwards at start-up. A model that cannot run it (or
        whose check fails on it) is probed at ``input_size``.
        """
        word_ids, word_mask = self.tokenize(["the building along the road"])
        divisor = int(getattr(self.model, "size_divisor", 1) or 1)
        small = min(self.input_size, -(-PROBE_SIDE // divisor) * divisor)
        sides = [small] if small == self.input_size else [small, self.input_size]
        for side in sides:
            try:
                counts = fuse_for_inference(self.model, (self._probe(side), word_ids, word_mask))
            except Exception as err:  # the model cannot run this example: run it as it is
                if side != self.input_size:
                    continue
                warnings.warn(
                    f"batch norms not folded ({type(err).__name__}: {err}); running unfolded",
                    UserWarning,
                    stacklevel=4,
                )
                return {}
            if any(counts.values()) or side == self.input_size:
                return counts
        return {}

    def _probe(self, side: int) -> torch.Tensor:
        """A fixed random normalised ``(1, 3, side, side)`` image, channels-last."""
        generator = torch.Generator().manual_seed(0)
        image = torch.rand(1, 3, side, side, generator=generator).to(self.device)
        image = (image - self.mean) / self.std
        return image.contiguous(memory_format=torch.channels_last)

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``word_ids (E, N)``, ``word_mask (E, N)`` of checked texts, on the device."""
        word_ids, word_mask = self.model.tokenize(list(texts))
        warn_truncated(texts, word_mask, stacklevel=4)
        return word_ids.to(self.device), word_mask.to(self.device)

    def normalise(self, tiles: np.ndarray) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` -> the model's normalised ``(B, 3, S, S)`` input."""
        return normalise(tiles, self.input_size, self.mean, self.std)

    def forward(self, images, word_ids, word_mask, size: tuple[int, int]) -> np.ndarray:
        """:func:`forward_rows` with this network's model, batch bound and dtype."""
        bfloat16 = self.dtype == torch.bfloat16
        return forward_rows(self.model, images, word_ids, word_mask, size, self.max_rows, bfloat16)

    def predict_tiles(
        self, tiles: np.ndarray, word_ids: torch.Tensor, word_mask: torch.Tensor
    ) -> np.ndarray:
        """``float32 (E, B, H, W)`` probabilities of tiles ``uint8 (B, H, W, 3)`` for every
        expression ``(E, N)``, in forwards of at most ``max_rows`` pairs."""
        n_tiles, height, width = tiles.shape[:3]
        n_expr = word_ids.shape[0]
        images = self.normalise(tiles)
        # Expression-major batch: row e * B + b pairs expression e with tile b.
        if n_expr > 1:
            images = images.repeat(n_expr, 1, 1, 1)
            word_ids = word_ids.repeat_interleave(n_tiles, dim=0)
            word_mask = word_mask.repeat_interleave(n_tiles, dim=0)
        elif n_tiles > 1:
            word_ids, word_mask = word_ids.expand(n_tiles, -1), word_mask.expand(n_tiles, -1)
        out = self.forward(images, word_ids, word_mask, (height, width))
        return out.reshape(n_expr, n_tiles, height, width)

    def predict_pairs(
        self, images: np.ndarray, wanted: list[tuple[int, str]]
    ) -> dict[tuple[int, str], np.ndarray]:
        """``{(b, text): float32 (H, W)}``: image ``b`` of ``uint8 (B, H, W, 3)`` read with
        ``text``, for each checked pair in ``wanted``."""
        if not wanted:
            return {}
        texts = list(dict.fromkeys(text for _, text in wanted))
        word_ids, word_mask = self.tokenize(texts)
        row_of = {text: i for i, text in enumerate(texts)}
        rows = torch.tensor([row_of[text] for _, text in wanted], device=self.device)
        batch = self.normalise(images[[b for b, _ in wanted]])
        probs = self.forward(batch, word_ids[rows], word_mask[rows], images.shape[1:3])
        return {key: prob for key, prob in zip(wanted, probs)}
