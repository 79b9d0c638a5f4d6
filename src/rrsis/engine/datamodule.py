"""RefSegRS-format data for training: resize + normalise, optional safe augmentation, collate.

Samples follow the ``rrsis.data`` contract (``image`` uint8 (H, W, 3), ``mask`` bool (H, W),
``text``, ``id``, ``meta``). Images are resized to the square model input (bilinear, no
anti-aliasing: the same resize as ``rrsis.infer.predictor``) and masks with nearest neighbour; ImageNet-style normalisation
uses the model's ``mean`` / ``std``. Tokenisation happens in the collate step with the model's
tokenizer, so datasets never depend on a tokenizer.

Augmentation (off in the paper recipe, on in the CPU preset) draws a random flip / 90-degree
rotation, but only for samples whose expression does not depend on orientation: a flip turns
"the car on the left" into a wrong label. Samples with meta ``kind == "position"`` or with a
spatial word (left, right, upper, lower, top, bottom, north, ... ) are never transformed.
Photometric augmentation (random brightness, contrast and saturation) likewise skips
expressions that name a colour or a tone ("white building", "dark water").

Category balancing (off by default) draws training samples with weights
``count(category) ** -balance`` (0 = natural frequencies, 0.5 = inverse square root, 1 = every
category equally often), from the ``category`` of each sample's stored meta; samples without
one share an "unknown" group. Counts are taken within each training dataset, and each dataset
keeps its share of the draws. An epoch keeps the size of the training set.

Preloading (off by default, ``preload=True``) decodes and resizes every sample once and serves
it from RAM at the model's input size (:class:`PreloadedDataset`); augmentation still happens
per epoch.

Training order and augmentation depend only on the seed and the epoch (:class:`EpochSampler`):
each epoch's order is drawn from ``(seed, epoch)``, and each drawn sample carries its own
augmentation seed. A run killed mid-epoch and resumed from its last checkpoint therefore trains
on the same batches, with the same flips, as a run that was never interrupted, whatever the
number of loader workers (:class:`ResumeDataOrder`, a callback ``rrsis.engine.train`` adds).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from rrsis.errors import DatasetError, RRSISError

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


class EpochSampler(Sampler):
    """Training order drawn from ``(seed, epoch)`` alone; resumable mid-epoch.

    Each epoch yields ``(index, augmentation_seed)`` pairs for :class:`TransformedDataset`: a
    permutation of the ``n`` samples, or, with ``weights``, ``n`` draws with replacement in
    proportion to them (category balancing).

    Args:
        n: number of samples.
        seed: the run's seed.
        weights: per-sample draw weights, or ``None`` (a permutation).
        epoch_of: returns the epoch about to be iterated (the trainer's count of finished
            epochs); ``None``: the value last given to :meth:`set_epoch`. Asking the trainer
            matters on resume, where Lightning sets the sampler's epoch only after it has made
            the epoch's iterator (see :class:`ResumeDataOrder`).
    """

    def __init__(
        self,
        n: int,
        seed: int,
        weights: Sequence[float] | None = None,
        epoch_of: Callable[[], int | None] | None = None,
    ) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        if self.weights is not None and len(self.weights) != self.n:
            raise RRSISError(f"{len(self.weights)} weights for {self.n} samples")
        self.epoch_of = epoch_of
        self.epoch = 0
        self.skip = 0  # samples of the next epoch already trained on (set on resume, used once)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def current_epoch(self) -> int:
        epoch = self.epoch_of() if self.epoch_of is not None else None
        return self.epoch if epoch is None else int(epoch)

    def order(self, epoch: int) -> tuple[Tensor, Tensor]:
        """``(indices, augmentation seeds)`` of one epoch."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is None:
            indices = torch.randperm(self.n, generator=generator)
        else:
            indices = torch.multinomial(self.weights, self.n, True, generator=generator)
        seeds = torch.randint(0, 2**62, (self.n,), generator=generator)
        return indices, seeds

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        indices, seeds = self.order(self.current_epoch())
        start, self.skip = self.skip, 0
        for i in range(start, self.n):
            yield int(indices[i]), int(seeds[i])


class EpochLoader(DataLoader):
    """The training DataLoader: marks itself resumable for Lightning.

    Its position is restored by :class:`ResumeDataOrder`, not through this interface (Lightning
    makes the first iterator before it restores loader states); ``state_dict`` records the
    sampler's seed, size and epoch in the checkpoint for the record, and having both methods
    stops Lightning from warning that a mid-epoch resume is unreliable.
    """

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if not isinstance(sampler, EpochSampler):
            return {}
        return {"seed": sampler.seed, "n": sampler.n, "epoch": sampler.current_epoch()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to do here: see :class:`ResumeDataOrder`."""


class ResumeDataOrder(pl.Callback):
    """On resume, restart the training iterator where the interrupted run was.

    Lightning makes the first training iterator early (``configure_optimizers`` asks for the
    number of steps), before the checkpoint's loop state is restored, and keeps it when it
    resumes. With an :class:`EpochSampler`, this callback sets how many samples of the current
    epoch were already trained on and makes that iterator again, now that the epoch is known.
    Distributed runs, whose sampler Lightning wraps, resume with their epoch's order restarted.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if trainer.ckpt_path is None or not isinstance(sampler, EpochSampler) or fetcher is None:
            return
        done = 0
        if trainer.fit_loop.restarting:  # stopped mid-epoch (at an epoch's end: nothing to skip)
            # "processed": a step checkpoint is written in on_train_batch_end, after the batch
            # was processed and before Lightning counts it completed; Lightning resumes after it.
            done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        sampler.skip = min(sampler.n, done * int(loader.batch_size or 1))
        iter(fetcher)


def _keep(sample: Any) -> Any:
    # Without it, batch_size=None would turn the numpy arrays into tensors.
    return sample


class _ResizeToUint8:
    """Picklable transform: a contract sample at ``size x size``, image rounded to uint8."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image, labels = resize_sample(sample, self.size)
        out = dict(sample)
        out["image"] = image.mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).numpy()
        out["mask"] = labels[0].numpy() > 0.5
        if len(labels) > 1:
            out["semantic"] = labels[1].numpy().astype(np.uint8)
        return out


class PreloadedDataset(Dataset):
    """Every sample of ``dataset`` decoded and resized once, then served from RAM.

    Reading a TIFF crop, cutting its class map and resizing it cost about 10 ms of CPU per
    sample, paid again at every epoch by the DataLoader workers, which share the cores with the
    model (``benchmarks/bench_train_loader.py``: the loader's throughput nearly doubles). This
    wrapper pays them once, at construction, and keeps the samples at the model's input size:
    images ``uint8 (size, size, 3)`` (the bilinear resize of :class:`SampleTransform`, rounded
    to 8 bit: at most half a grey level away), masks ``bool`` and ``semantic`` class maps
    ``uint8`` (nearest). Items are
    contract samples that :class:`SampleTransform` takes without resizing, so random
    augmentation still happens per epoch.

    The pixels live in a few large numpy arrays created in the main process, so DataLoader
    workers forked later share them instead of copying (about ``5 * size**2`` bytes per sample:
    0.5 MB at 320).

    Args:
        dataset: map-style dataset of contract samples (optionally with ``semantic``).
        size: square side to store the samples at.
        workers: processes decoding in parallel (0 = in this process).
        progress: show a progress bar.
        desc: the progress bar's label.
    """

    def __init__(
        self,
        dataset: Dataset,
        size: int,
        workers: int = 0,
        progress: bool = True,
        desc: str = "preload",
    ) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        self.size = int(size)
        self.images = np.empty((n, self.size, self.size, 3), dtype=np.uint8)
        self.masks = np.empty((n, self.size, self.size), dtype=bool)
        self.semantic: np.ndarray | None = None
        self.has_semantic = np.zeros(n, dtype=bool)
        self.records: list[dict[str, Any]] = []
        loader = DataLoader(
            TransformedDataset(dataset, _ResizeToUint8(self.size)),
            batch_size=None,
            num_workers=workers,
            collate_fn=_keep,
            # Its own generator: iterating a DataLoader draws a seed from torch's global RNG,
            # which would change the training run's shuffling and augmentation.
            generator=torch.Generator().manual_seed(0),
        )
        for index, sample in enumerate(tqdm(loader, total=n, desc=desc, disable=not progress)):
            self.images[index] = sample.pop("image")
            self.masks[index] = sample.pop("mask")
            semantic = sample.pop("semantic", None)
            if semantic is not None:
                if self.semantic is None:
                    self.semantic = np.zeros((n, self.size, self.size), dtype=np.uint8)
                self.semantic[index] = semantic
                self.has_semantic[index] = True
            self.records.append(sample)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.records[index])
        sample["image"] = self.images[index]
        sample["mask"] = self.masks[index]
        if self.has_semantic[index]:
            sample["semantic"] = self.semantic[index]  # type: ignore[index]
        return sample

    @property
    def nbytes(self) -> int:
        """Bytes held by the pixel arrays."""
        extra = 0 if self.semantic is None else self.semantic.nbytes
        return self.images.nbytes + self.masks.nbytes + extra


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


def sample_categories(part: Dataset) -> list[str | None]:
    """Category of every sample of ``part``, read from stored meta only (no pixels).

    Datasets without :meth:`~rrsis.data.refsegrs.RefSegRS.meta_of`, or samples whose meta has
    no ``category``, give ``None``.
    """
    meta_of = getattr(part, "meta_of", None)
    if meta_of is None:
        return [None] * len(part)  # type: ignore[arg-type]
    categories = (meta_of(i).get("category") for i in range(len(part)))  # type: ignore[arg-type]
    return [None if c is None else str(c) for c in categories]


def balance_weights(categories: Sequence[str | None], balance: float) -> list[float]:
    """Sampling weight of each sample, ``count(its category) ** -balance``, scaled to sum to
    the number of samples.

    ``None`` categories form one group of their own. ``balance`` 0 gives equal weights,
    1 makes every category equally likely.
    """
    if not 0.0 <= balance <= 1.0:
        raise RRSISError(f"category balance must be in [0, 1], got {balance}")
    counts: dict[str | None, int] = {}
    for category in categories:
        counts[category] = counts.get(category, 0) + 1
    weights = [counts[c] ** -balance for c in categories]
    scale = len(weights) / sum(weights) if weights else 1.0
    return [w * scale for w in weights]


def median_image_side(dataset: Dataset, n: int = 32) -> int | None:
    """Median longer side of the images of ``n`` evenly spaced samples.

    ``None`` when the dataset is empty or its samples carry no ``image``.
    """
    size = len(dataset)  # type: ignore[arg-type]
    k = min(n, size)
    picks = sorted({round(i * (size - 1) / max(k - 1, 1)) for i in range(k)})
    sides = []
    for i in picks:
        sample = dataset[i]
        image = sample.get("image") if isinstance(sample, dict) else None
        if image is not None:
            sides.append(max(np.asarray(image).shape[:2]))
    return int(np.median(sides)) if sides else None


def open_split(root: str | Path, split: str) -> Dataset:
    """Open ``split`` of a RefSegRS-format tree (``rrsis.data.refsegrs.RefSegRS``)."""
    from rrsis.data.refsegrs import RefSegRS

    root = Path(root)
    if not root.is_dir():
        raise DatasetError("dataset root does not exist", root)
    return RefSegRS(root, split)


class RefSegDataModule(pl.LightningDataModule):
    """Train on the concatenated train splits of several roots; validate on one root's val.

    The test split is never opened here: checkpoints are selected on validation only.

    Args:
        train_sets: datasets (or RefSegRS roots) whose items are contract samples.
        val_set: validation dataset or RefSegRS root (its ``val`` split); ``None`` = the ``val``
            split of the first train root.
        tokenize: the model's tokenizer ``list[str] -> (word_ids, word_mask)``.
        input_size: square model input side.
        mean: model normalisation mean (0-1 RGB).
        std: model normalisation std.
        batch_size: samples per device.
        workers: DataLoader workers.
        augment: safe geometric augmentation of training samples.
        photometric: strength of colour-safe photometric augmentation (see
            :class:`SampleTransform`); 0 = off.
        semantic_lookup: ``(meta, shape) -> class map or None`` adding full class maps to
            training samples (:class:`AddSemantic`) for an auxiliary loss; ``None`` = none.
        balance: category balancing strength in [0, 1] (see the module docstring); 0 = off
            (plain shuffling).
        seed: the training order and augmentation seed (:class:`EpochSampler`).
        preload: decode and resize the train and val samples once, at ``setup``, and serve
            them from RAM (:class:`PreloadedDataset`): the loader's work per epoch drops to
            augmentation, for about 0.5 MB of memory per sample at 320x320 (on 2 CPU cores the
            model sets the pace, so steps get only ~3 % faster).
    """

    def __init__(
        self,
        train_sets: Sequence[Dataset | str | Path],
        val_set: Dataset | str | Path | None,
        tokenize: Tokenize,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int = 8,
        workers: int = 0,
        augment: bool = False,
        semantic_lookup: Callable[[dict, tuple[int, int]], Any] | None = None,
        photometric: float = 0.0,
        balance: float = 0.0,
        preload: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.seed = int(seed)
        self.input_size = int(input_size)
        self.preload = bool(preload)
        if not 0.0 <= balance <= 1.0:
            raise RRSISError(f"category balance must be in [0, 1], got {balance}")
        self.balance = float(balance)
        self.train_weights: list[float] | None = None
        self.semantic_lookup = semantic_lookup
        if not train_sets:
            raise DatasetError("no training data given")
        self.train_sets = list(train_sets)
        self.val_source = val_set
        self.collate = Collate(tokenize)
        self.batch_size = batch_size
        self.workers = workers
        self.train_transform = SampleTransform(
            input_size, mean, std, augment=augment, photometric=photometric
        )
        self.eval_transform = SampleTransform(input_size, mean, std, augment=False)
        self.train_dataset: Dataset | None = None
        #: Typical side of the training images before resizing (set by :meth:`setup`; stored
        #: with the exported model: the window Segmenter cuts larger images into).
        self.train_image_side: int | None = None
        self.val_dataset: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        parts = [
            open_split(s, "train") if isinstance(s, (str, Path)) else s for s in self.train_sets
        ]
        for part, source in zip(parts, self.train_sets):
            if len(part) == 0:  # type: ignore[arg-type]
                raise DatasetError(
                    "training split is empty", source if isinstance(source, (str, Path)) else None
                )
        merged = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        self.train_image_side = median_image_side(merged)
        if self.balance > 0:
            # Balanced within each dataset, so that each keeps its share of the draws (the
            # synthetic scenes have many rare categories of their own).
            self.train_weights = [
                w for part in parts for w in balance_weights(sample_categories(part), self.balance)
            ]
        if self.semantic_lookup is not None:
            merged = TransformedDataset(merged, AddSemantic(self.semantic_lookup))
        if self.preload:
            merged = PreloadedDataset(
                merged, self.input_size, workers=self.workers, desc="preload train"
            )
        self.train_dataset = TransformedDataset(merged, self.train_transform)
        val = self.val_source
        if val is None:
            first = self.train_sets[0]
            if not isinstance(first, (str, Path)):
                raise DatasetError("no validation data given")
            val = first
        val = open_split(val, "val") if isinstance(val, (str, Path)) else val
        if len(val) == 0:  # type: ignore[arg-type]
            raise DatasetError(
                "validation split is empty",
                self.val_source if isinstance(self.val_source, (str, Path)) else None,
            )
        if self.preload:
            val = PreloadedDataset(val, self.input_size, workers=self.workers, desc="preload val")
        self.val_dataset = TransformedDataset(val, self.eval_transform)

    def _trainer_epoch(self) -> int | None:
        """The trainer's count of finished epochs (``None`` outside a trainer)."""
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else int(trainer.fit_loop.epoch_progress.current.completed)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        options: dict[str, Any] = dict(
            batch_size=self.batch_size,
            num_workers=self.workers,
            collate_fn=self.collate,
            persistent_workers=self.workers > 0,
        )
        if not shuffle:
            return DataLoader(dataset, shuffle=False, **options)
        sampler = EpochSampler(
            len(dataset),  # type: ignore[arg-type]
            self.seed,
            weights=self.train_weights,
            epoch_of=self._trainer_epoch,
        )
        return EpochLoader(
            dataset,
            sampler=sampler,
            # A ragged last batch of one sample breaks BatchNorm in training.
            drop_last=len(dataset) > self.batch_size,  # type: ignore[arg-type]
            **options,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_dataset is not None
        return self._loader(self.val_dataset, shuffle=False)
