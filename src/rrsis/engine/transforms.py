"""Sample transforms for training: resize + normalise, safe augmentation, class maps, collate.

Samples follow the ``rrsis.data`` contract (``image`` uint8 (H, W, 3), ``mask`` bool (H, W),
``text``, ``id``, ``meta``). Images are resized to the square model input (bilinear, no
anti-aliasing: the same resize as ``rrsis.infer.predictor``) and masks with nearest neighbour;
ImageNet-style normalisation uses the model's ``mean`` / ``std``. Tokenisation happens in the
collate step with the model's tokenizer, so datasets never depend on a tokenizer.

Augmentation (off in the paper recipe, on in the CPU preset) draws a random flip / 90-degree
rotation, but only for samples whose expression does not depend on orientation: a flip turns
"the car on the left" into a wrong label. Samples with meta ``kind == "position"`` or with a
spatial word (left, right, upper, lower, top, bottom, north, ... ) are never transformed.
Photometric augmentation (random brightness, contrast and saturation) likewise skips
expressions that name a colour or a tone ("white building", "dark water").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from rrsis.errors import RRSISError

_SPATIAL = re.compile(
    r"\b(left|right|upper|lower|top|bottom|above|below|north|south|east|west|"
    r"northern|southern|eastern|western|leftmost|rightmost|topmost|bottommost)\b",
    re.IGNORECASE,
)

_TONE = re.compile(
    r"\b(white|black|gr[ae]y|red|blue|green|yellow|brown|orange|purple|pink|dark|darker|"
    r"darkest|light|lighter|bright|brighter|brightest|pale|colou?r(ed)?)\b",
    re.IGNORECASE,
)
# ITU-R BT.601 luma weights, for contrast and saturation changes.
_LUMA = (0.299, 0.587, 0.114)

Tokenize = Callable[[list[str]], tuple[Tensor, Tensor]]


def colour_free(sample: dict[str, Any]) -> bool:
    """Whether brightness, contrast and saturation changes keep the expression true."""
    return not _TONE.search(sample.get("text", ""))


def orientation_free(sample: dict[str, Any]) -> bool:
    """Whether flips and rotations keep the expression true for the mask."""
    kind = (sample.get("meta") or {}).get("kind")
    return kind != "position" and not _SPATIAL.search(sample.get("text", ""))


def resize_sample(sample: dict[str, Any], size: int) -> tuple[Tensor, Tensor]:
    """A contract sample's image and label maps at ``size x size``.

    Returns the image as float ``(3, size, size)`` in 0-1 (bilinear, ``align_corners=False``,
    no anti-aliasing) and the label maps, the mask and then the optional ``semantic`` class map,
    as float ``(L, size, size)`` (nearest). Maps already at ``size`` are not resampled.
    """
    image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
    image = image.float().div_(255.0)[None]
    # Label maps (the mask, and the optional class map) are resized together, nearest.
    labels = [sample["mask"]] + ([sample["semantic"]] if "semantic" in sample else [])
    labels = torch.stack([torch.from_numpy(np.asarray(m, dtype=np.float32)) for m in labels])
    shape = (size, size)
    if image.shape[-2:] != shape:
        image = F.interpolate(image, size=shape, mode="bilinear", align_corners=False)
    if labels.shape[-2:] != shape:
        labels = F.interpolate(labels[None], size=shape, mode="nearest")[0]
    return image[0].clamp_(0.0, 1.0), labels


class SampleTransform:
    """Turn a contract sample into model tensors.

    Args:
        size: square side of the model input.
        mean: per-channel mean of 0-1 RGB.
        std: per-channel std of 0-1 RGB.
        augment: random flips / 90-degree rotations for orientation-free samples.
        photometric: strength ``s`` of random brightness, contrast and saturation factors,
            each drawn from ``[1 - s, 1 + s]``, for samples whose expression names no colour
            (0 = off). Applied to the 0-1 image before normalisation, then clamped.

    ``__call__`` returns the sample with ``image`` float ``(3, size, size)`` normalised and
    ``mask`` long ``(size, size)``; ``text``, ``id`` and ``meta`` are kept. An optional
    ``semantic`` class map (see :class:`AddSemantic`) is resized (nearest) and flipped or
    rotated with the image.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        photometric: float = 0.0,
    ) -> None:
        if not 0.0 <= photometric < 1.0:
            raise RRSISError(f"photometric strength must be in [0, 1), got {photometric}")
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.augment = augment
        self.photometric = float(photometric)

    def __call__(
        self, sample: dict[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """Transform one sample; random draws come from ``generator`` (``None``: torch's global
        RNG, seeded per worker by ``pl.seed_everything(workers=True)``)."""
        image, labels = resize_sample(sample, self.size)
        mask = labels[0]
        semantic = labels[1] if len(labels) > 1 else None
        if self.augment and orientation_free(sample):
            flips = torch.rand(2, generator=generator) < 0.5
            flip_x, flip_y = bool(flips[0]), bool(flips[1])
            k = int(torch.randint(0, 4, (), generator=generator))

            def move(t: Tensor) -> Tensor:
                t = t.flip(-1) if flip_x else t
                t = t.flip(-2) if flip_y else t
                return torch.rot90(t, k, (-2, -1)) if k else t

            image, mask = move(image), move(mask)
            semantic = None if semantic is None else move(semantic)
        if self.photometric and colour_free(sample):
            image = self._jitter(image, generator)
        image = (image - self.mean) / self.std
        out = dict(sample)
        out["image"] = image.contiguous()
        out["mask"] = mask.long().contiguous()
        if semantic is not None:
            out["semantic"] = semantic.long().contiguous()
        return out

    def _jitter(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Random brightness, contrast and saturation of a 0-1 ``(3, H, W)`` image."""
        low, high = 1.0 - self.photometric, 1.0 + self.photometric
        factors = low + (high - low) * torch.rand(3, generator=generator)
        brightness, contrast, saturation = factors.tolist()
        luma = torch.tensor(_LUMA).view(3, 1, 1)
        image = image * brightness
        mean_gray = (image * luma).sum(0).mean()
        image = (image - mean_gray) * contrast + mean_gray
        gray = (image * luma).sum(0, keepdim=True)
        image = (image - gray) * saturation + gray
        return image.clamp_(0.0, 1.0)


class TransformedDataset(Dataset):
    """Apply a transform to the items of another dataset (no assumption on its class).

    An index may also be ``(index, seed)`` (what :class:`EpochSampler` yields): the transform
    then draws its randomness from a generator seeded with ``seed``
    (``transform(sample, generator)``).
    """

    def __init__(self, dataset: Dataset, transform: Callable[..., dict]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(index, tuple):
            index, seed = index
            generator = torch.Generator().manual_seed(int(seed))
            return self.transform(self.dataset[index], generator)
        return self.transform(self.dataset[index])


class AddSemantic:
    """Transform adding the crop's full class map (``semantic``, uint8 ``(H, W)``) to a sample.

    Used with :class:`TransformedDataset` before :class:`SampleTransform`.

    Args:
        lookup: ``(meta, (H, W)) -> class ids or None``, e.g.
            :class:`rrsis.data.dubai.DubaiLabelLookup`; id 0 is unlabeled (ignored by the loss).

    Samples the lookup knows nothing about (synthetic scenes, another dataset) get no
    ``semantic`` key; :class:`Collate` fills them with the ignore value.
    """

    def __init__(self, lookup: Callable[[dict, tuple[int, int]], Any]) -> None:
        self.lookup = lookup

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        semantic = self.lookup(sample.get("meta") or {}, sample["mask"].shape[:2])
        if semantic is None:
            return sample
        return {**sample, "semantic": semantic}


# Target value of pixels the auxiliary semantic loss ignores (unlabeled, or no class map).
SEMANTIC_IGNORE = 255


class Collate:
    """Stack transformed samples and tokenise their expressions.

    Returns a batch dict: ``image`` (B, 3, S, S), ``mask`` (B, S, S) long, ``word_ids`` and
    ``word_mask`` (B, N) long, ``text`` / ``id`` / ``meta`` lists; and ``semantic`` (B, S, S)
    long when any sample has a class map: class ``id - 1``, or :data:`SEMANTIC_IGNORE` for
    unlabeled pixels and samples without a map.
    """

    def __init__(self, tokenize: Tokenize) -> None:
        self.tokenize = tokenize

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [s["text"] for s in samples]
        word_ids, word_mask = self.tokenize(texts)
        batch = {
            "image": torch.stack([s["image"] for s in samples]),
            "mask": torch.stack([s["mask"] for s in samples]),
            "word_ids": word_ids.long(),
            "word_mask": word_mask.long(),
            "text": texts,
            "id": [s["id"] for s in samples],
            "meta": [s.get("meta", {}) for s in samples],
        }
        if any("semantic" in s for s in samples):
            maps = []
            for s in samples:
                if "semantic" in s:
                    ids = s["semantic"]
                    maps.append(torch.where(ids > 0, ids - 1, SEMANTIC_IGNORE))
                else:
                    maps.append(torch.full_like(s["mask"], SEMANTIC_IGNORE))
            batch["semantic"] = torch.stack(maps)
        return batch
