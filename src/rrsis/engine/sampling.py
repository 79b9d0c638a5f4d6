"""Training order: seeded per epoch, resumable mid-epoch, optionally balanced by category.

Training order and augmentation depend only on the seed and the epoch (:class:`EpochSampler`):
each epoch's order is drawn from ``(seed, epoch)``, and each drawn sample carries its own
augmentation seed. A run killed mid-epoch and resumed from its last checkpoint therefore trains
on the same batches, with the same flips, as a run that was never interrupted, whatever the
number of loader workers (:class:`ResumeDataOrder`, a callback ``rrsis.engine.train`` adds).

Category balancing (off by default) draws training samples with weights
``count(category) ** -balance`` (0 = natural frequencies, 0.5 = inverse square root, 1 = every
category equally often), from the ``category`` of each sample's stored meta; samples without
one share an "unknown" group. Counts are taken within each training dataset, and each dataset
keeps its share of the draws. An epoch keeps the size of the training set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from rrsis.errors import RRSISError


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
