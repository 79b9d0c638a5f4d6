"""The training datamodule: train splits of several roots, one val split, optional preloading.

Samples are turned into model tensors by :mod:`rrsis.engine.transforms`; training order and
category balancing come from :mod:`rrsis.engine.sampling`.

Preloading (off by default, ``preload=True``) decodes and resizes every sample once and serves
it from RAM at the model's input size (:class:`PreloadedDataset`); augmentation still happens
per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm.auto import tqdm

from rrsis.data.known_words import content_words
from rrsis.data.refsegrs import RefSegRS, phrase_file
from rrsis.engine.sampling import EpochLoader, EpochSampler, balance_weights, sample_categories
from rrsis.engine.transforms import (
    AddSemantic,
    Collate,
    SampleTransform,
    Tokenize,
    TransformedDataset,
    resize_sample,
)
from rrsis.errors import DatasetError, RRSISError


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


def refuse_empty_split(dataset: Any, root: str | Path | None, split: str) -> None:
    """Raise a :class:`DatasetError` naming the split's file when ``dataset`` has no samples
    (an empty split would train on nothing, or score 0.00 without complaint)."""
    if len(dataset) > 0:
        return
    where = getattr(dataset, "refs_path", None)
    if where is None and root is not None:
        where = phrase_file(root, split)
    raise DatasetError(f"the {split} split has no samples", where)


def open_split(root: str | Path, split: str) -> Dataset:
    """Open ``split`` of a RefSegRS-format tree (``rrsis.data.refsegrs.RefSegRS``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("dataset root does not exist", root)
    return RefSegRS(root, split)


def training_words(parts: Sequence[Dataset]) -> list[str]:
    """The content words of every training expression, sorted (the model's vocabulary).

    Read from the datasets' expression lists (``expressions``), never by decoding images; a
    dataset without one adds nothing, and a model without a vocabulary warns about nothing.
    """
    words: set[str] = set()
    for part in parts:
        for expression in getattr(part, "expressions", None) or ():
            words.update(content_words(str(expression)))
    return sorted(words)


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
        #: Content words of the training expressions: the vocabulary stored with the export.
        self.train_words: list[str] = []
        self.val_dataset: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        parts = [
            open_split(s, "train") if isinstance(s, (str, Path)) else s for s in self.train_sets
        ]
        for part, source in zip(parts, self.train_sets):
            refuse_empty_split(part, source if isinstance(source, (str, Path)) else None, "train")
        merged = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        self.train_image_side = median_image_side(merged)
        self.train_words = training_words(parts)
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
        root = val if isinstance(val, (str, Path)) else None
        val = open_split(val, "val") if root is not None else val
        refuse_empty_split(val, root, "val")
        if self.preload:
            val = PreloadedDataset(val, self.input_size, workers=self.workers, desc="preload val")
        self.val_dataset = TransformedDataset(val, self.eval_transform)

    def _trainer_epoch(self) -> int | None:
        """The trainer's count of finished epochs (``None`` outside a trainer)."""
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else int(trainer.fit_loop.epoch_progress.current.completed)

    def _on_cuda(self) -> bool:
        """The attached trainer runs on a CUDA device."""
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        options: dict[str, Any] = dict(
            batch_size=self.batch_size,
            num_workers=self.workers,
            collate_fn=self.collate,
            persistent_workers=self.workers > 0,
            # Batches in page-locked memory: Lightning's non-blocking copy to the GPU then
            # overlaps the step instead of waiting for a staging copy.
            pin_memory=self._on_cuda(),
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
