"""A batch of images segmented by several processes, on one machine or many (Lightning).

``rrsis predict-batch --devices N --num-nodes M`` runs :func:`run_batch_distributed`: Lightning's
prediction loop with its ``ddp`` strategy starts (or, under SLURM or ``torchrun``, joins) one
process per device, each loads the model onto its own device, and each segments its share of
the planned images (:func:`shard`: every ``world``-th image from its rank, so every image is
segmented exactly once, with no padding or repeats, and a process with no share simply waits).
Each process writes its images' outputs as a one-process run does
(:func:`rrsis.infer.batch.predict_one`: atomic files, an unreadable image recorded as an
``error`` row). At the end the rows are gathered on the first process (global rank 0), which
writes ``summary.csv`` in the order of a one-process run, and the merged layer and VRT.

What differs from a one-process run: only the ``seconds`` column (each image's own time, as in
any two runs). An interrupted run leaves ``summary.part-RANK.csv`` files listing what each
process wrote; ``--skip-existing`` resumes it, and the finished run removes them.

All processes must see the inputs and the output folder at the same paths (a shared file
system on a cluster).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, Sampler

from rrsis.errors import RRSISError
from rrsis.infer.batch import SUMMARY_NAME, BatchPlan, predict_one, write_summary
from rrsis.infer.mosaic import write_mosaics

if TYPE_CHECKING:
    from rrsis.infer.predictor import Segmenter

#: Part files of an interrupted run: ``summary.part-<global rank>.csv`` in the output folder.
PART_PATTERN = "summary.part-*.csv"


@dataclass
class Processes:
    """Where a batch runs: Lightning's ``devices``, ``num_nodes`` and ``accelerator``.

    Args:
        devices: processes per machine: a number, ``"auto"`` (every GPU, or one CPU process)
            or GPU indices (``"0,1"``), as ``pl.Trainer`` takes them.
        num_nodes: machines (under SLURM: ``--nodes``, with ``--ntasks-per-node`` = devices).
        accelerator: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        timeout_minutes: how long a process that finished its share waits for the others
            (the processes' shares can take different times; Lightning's default is 30).

    Raises:
        RRSISError: a value out of range (one line naming it).
    """

    devices: int | str = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    timeout_minutes: float = 24 * 60

    def __post_init__(self) -> None:
        text = str(self.devices).strip()
        if text.isdigit():
            self.devices = int(text)
        elif text != "auto" and not all(p.strip().isdigit() for p in text.split(",")):
            raise RRSISError(f"devices must be a number, 'auto' or GPU indices, got {text!r}")
        if self.devices == 0:
            raise RRSISError("devices must be at least 1")
        if not int(self.num_nodes) >= 1:
            raise RRSISError(f"num_nodes must be at least 1, got {self.num_nodes}")
        if self.accelerator not in ("auto", "cpu", "gpu", "cuda"):
            raise RRSISError(f"accelerator must be auto, cpu or gpu, got {self.accelerator!r}")
        if not self.timeout_minutes > 0:
            raise RRSISError(f"timeout_minutes must be > 0, got {self.timeout_minutes}")


def shard(count: int, rank: int, world: int) -> range:
    """Indices of the images process ``rank`` of ``world`` segments: ``rank``, ``rank + world``...

    Strided rather than contiguous, so that a folder whose large images sit together still
    shares its work evenly. Ranks past the last image get none.
    """
    return range(rank, count, world)


class ShardSampler(Sampler[int]):
    """The indices of one process's :func:`shard` (never padded, unlike ``DistributedSampler``)."""

    def __init__(self, count: int, rank: int, world: int) -> None:
        self.indices = shard(count, rank, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class BatchPrediction(pl.LightningModule):
    """Lightning's view of a batch run: each prediction step segments one planned image.

    Args:
        batch: the run, checked by :func:`rrsis.infer.batch.prepare_batch` in every process.
        make_segmenter: builds the :class:`~rrsis.infer.predictor.Segmenter` on the device
            it is given (each process's own), once the processes are set up.

    ``rows`` holds, per image segmented here, its index in ``batch.images`` and its summary rows.
    """

    def __init__(self, batch: BatchPlan, make_segmenter: Callable[[torch.device], Segmenter]):
        super().__init__()
        self.batch, self.make_segmenter = batch, make_segmenter
        self.segmenter: Segmenter | None = None
        self.expressions: list[str] = []
        self.rows: list[tuple[int, list[dict]]] = []
        # More processes than images: the last ones have nothing to do (and just wait).
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def predict_dataloader(self) -> DataLoader:
        count = len(self.batch.images)
        sampler = ShardSampler(count, self.trainer.global_rank, self.trainer.world_size)
        return DataLoader(range(count), sampler=sampler, batch_size=None)

    def on_predict_start(self) -> None:
        from tqdm.auto import tqdm

        self.segmenter = self.make_segmenter(self.trainer.strategy.root_device)
        self.expressions = self.segmenter.check_expressions(self.batch.expressions)
        world = self.trainer.world_size
        count = len(shard(len(self.batch.images), 0, world))
        # The first process's bar: its share, about 1/world of the images.
        desc = "images" if world == 1 else f"images (process 1 of {world})"
        shown = self.batch.config.progress and self.trainer.is_global_zero
        self.bar = tqdm(total=count, desc=desc, unit="image", disable=not shown)

    def predict_step(self, index: int, batch_idx: int) -> int:
        plan = self.batch.images[int(index)]
        rows = predict_one(plan, self.batch.config, self.expressions, self.segmenter)
        self.rows.append((int(index), rows))
        self.bar.update()
        return int(index)

    def on_predict_end(self) -> None:
        self.bar.close()


class _Quiet(logging.Filter):
    """Drops Lightning's lines that say nothing about this run (TPUs, advertisements)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("TPU available", "HPU available", "💡"))


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Without Lightning's lines and warnings that say nothing about a batch run."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    quiet = _Quiet()
    logger.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            yield
    finally:
        logger.removeFilter(quiet)


def _trainer(processes: Processes) -> pl.Trainer:
    one = processes.devices == 1 and int(processes.num_nodes) == 1
    # One process: no process group to set up.
    strategy = "auto" if one else DDPStrategy(timeout=timedelta(minutes=processes.timeout_minutes))
    return pl.Trainer(
        devices=processes.devices,
        num_nodes=int(processes.num_nodes),
        accelerator=processes.accelerator,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,  # BatchPrediction's own bar, as in a one-process run
        use_distributed_sampler=False,  # ShardSampler: each image once
        # Under SLURM: no requeue-on-signal handler (it would save a training checkpoint);
        # a requeued or repeated job resumes with --skip-existing.
        plugins=[SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None,
    )


def _gather(rows: list[tuple[int, list[dict]]]) -> list[tuple[int, list[dict]]]:
    """Every process's rows, on every process (one process: its own)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    everyone: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, rows)
    return [item for part in everyone for item in part]


def _flat(rows: list[tuple[int, list[dict]]]) -> list[dict]:
    """Summary rows in the order of the planned images (that of a one-process run)."""
    return [row for _, image_rows in sorted(rows, key=lambda item: item[0]) for row in image_rows]


def run_batch_distributed(
    batch: BatchPlan,
    make_segmenter: Callable[[torch.device], Segmenter],
    processes: Processes | None = None,
) -> list[dict] | None:
    """Segment a prepared batch with one process per device (module docstring).

    Every process runs this with the same ``batch`` (the command is started once per process
    by Lightning, SLURM's ``srun`` or ``torchrun``).

    Args:
        batch: from :func:`rrsis.infer.batch.prepare_batch`.
        make_segmenter: builds the model on a process's device (:class:`BatchPrediction`).
        processes: devices, machines and accelerator (:class:`Processes`).

    Returns:
        On the first process, every summary row, as :func:`rrsis.infer.batch.run_batch` returns
        them; ``None`` on the others.
    """
    processes = processes or Processes()
    module = BatchPrediction(batch, make_segmenter)
    replace = batch.config.overwrite or batch.config.skip_existing
    with _quiet_lightning():
        try:
            trainer = _trainer(processes)
            # SLURM's tasks must match devices and nodes: checked now, not in every process.
            environment = getattr(trainer.strategy, "cluster_environment", None)
            if environment is not None:
                environment.validate_settings(trainer.num_devices, trainer.num_nodes)
        except (ValueError, MisconfigurationException) as err:  # e.g. no GPU, SLURM mismatch
            raise RRSISError(f"cannot start the processes: {str(err).splitlines()[0]}") from None
        batch.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            trainer.predict(module, return_predictions=False)
        except BaseException:
            # What this process wrote, for the record (a resumed run replaces it).
            if trainer.world_size == 1:
                write_summary(batch.out_dir / SUMMARY_NAME, _flat(module.rows), replace)
            elif module.rows:
                part = batch.out_dir / PART_PATTERN.replace("*", str(trainer.global_rank))
                write_summary(part, _flat(module.rows), overwrite=True)
            raise
    rows = _gather(module.rows)
    if not trainer.is_global_zero:
        return None
    rows = _flat(rows)
    # The first process always has an image (index 0), so its model is loaded.
    threshold = module.segmenter.threshold
    try:
        write_mosaics(batch.config, batch.images, batch.expressions, rows, threshold)
    finally:
        write_summary(batch.out_dir / SUMMARY_NAME, rows, replace)
    for part in Path(batch.out_dir).glob(PART_PATTERN):
        part.unlink(missing_ok=True)
    return rows
