"""The files of a training run, written whole and kept across resumes.

- Checkpoints go through :class:`AtomicCheckpointIO`: ``torch.save`` into a temporary file
  next to the checkpoint (``rrsis.data.files.temp_path``), then one rename. Lightning's own
  writer stages the file in the system temporary folder, where a killed run leaves it behind.
  :class:`BackgroundCheckpointIO` does the same in a background thread, from a copy.
- ``logs/metrics.csv`` is written by :class:`RunCSVLogger`: the whole file is rewritten
  atomically at every flush, and a resumed run keeps the rows of its earlier part (Lightning's
  CSV logger deletes them when it finds the file).
- :func:`checkpoint_step` reads where a checkpoint stopped, and says in one line when the
  file is damaged (a truncated ``last.ckpt``), before Lightning starts.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers import CSVLogger

from rrsis.data.files import atomic_write
from rrsis.errors import RRSISError

METRICS_FILE = "metrics.csv"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer with the temporary file next to the checkpoint.

    A kill while saving leaves the previous checkpoint whole and a temporary file that is
    recognisably rrsis's (``.last.ckpt.<pid>-<hex>.rrsis-tmp.ckpt``), which the next run into
    the folder removes (``rrsis.data.files.clean_stale_temps``).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp), overwrite=True)


class BackgroundCheckpointIO(AtomicCheckpointIO):
    """:class:`AtomicCheckpointIO` in one background thread, so training does not wait for the disk.

    ``save_checkpoint`` copies every tensor of the checkpoint on the calling thread (on its own
    device: a GPU copy takes milliseconds, and holds one more copy of the state in GPU memory
    until it is written) and queues the write; later optimiser steps change the live tensors,
    never the copy. ``remove_checkpoint`` is queued behind the writes before it: removing at once,
    as Lightning's ``AsyncCheckpointIO`` does, deletes nothing when the file it replaces is still
    being written (a best checkpoint superseded within one write), and that file appears later
    and stays. ``teardown`` waits for the queue; an error in the thread is raised by the next
    call or by ``teardown``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.executor: ThreadPoolExecutor | None = None
        self.error: BaseException | None = None

    def _submit(self, work: Callable[..., None], *args: Any) -> None:
        if self.error is not None:
            raise self.error
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")

        def run() -> None:
            try:
                work(*args)
            except BaseException as err:  # noqa: BLE001 - raised on the training thread
                self.error = err

        self.executor.submit(run)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("BackgroundCheckpointIO takes no storage_options")
        copy = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().clone())
        self._submit(super().save_checkpoint, copy, path)

    def remove_checkpoint(self, path: Any) -> None:
        self._submit(super().remove_checkpoint, path)

    def teardown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def checkpoint_step(path: Path) -> tuple[int, int]:
    """``(global_step, epoch)`` of a Lightning checkpoint, read without loading its tensors.

    Raises:
        RRSISError: the file is missing, truncated or not a checkpoint (one line naming it).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["global_step"]), int(state["epoch"])
    except FileNotFoundError:
        raise RRSISError(f"{path}: not found") from None
    except Exception as err:  # torch raises several types for damaged files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RRSISError(f"{path}: not a readable checkpoint, truncated? ({first})") from None


def read_metrics_rows(path: Path, before_step: int | None) -> list[dict[str, str]]:
    """Rows of an existing ``metrics.csv`` logged before ``before_step`` (``None``: none).

    Rows of steps at or after ``before_step`` were logged by a run killed after its last
    checkpoint; the resumed run trains those steps again and logs them anew.
    """
    if before_step is None or not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RRSISError(f"{path}: cannot be read ({err})") from None
    kept = []
    for row in rows:
        try:
            step = int(float(row.get("step") or ""))
        except ValueError:
            continue
        if step < before_step:
            kept.append({k: v for k, v in row.items() if k is not None and v not in (None, "")})
    return kept


class _MetricsWriter:
    """The experiment of :class:`RunCSVLogger` (the interface of Lightning's ExperimentWriter)."""

    def __init__(self, log_dir: str, earlier: list[dict[str, Any]]) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, METRICS_FILE)
        self.metrics: list[dict[str, Any]] = []
        self.hparams: dict[str, Any] = {}
        self._rows: list[dict[str, Any]] = list(earlier)
        os.makedirs(log_dir, exist_ok=True)

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        row = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics_dict.items()}
        row["step"] = len(self._rows) + len(self.metrics) if step is None else step
        self.metrics.append(row)

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        path = Path(self.log_dir) / "hparams.yaml"
        atomic_write(path, lambda tmp: save_hparams_to_yaml(tmp, self.hparams), overwrite=True)

    def save(self) -> None:
        if not self.metrics:
            return
        self._rows += self.metrics
        self.metrics = []
        keys = sorted(set().union(*self._rows))

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=keys)
                writer.writeheader()
                writer.writerows(self._rows)

        atomic_write(Path(self.metrics_file_path), write, overwrite=True)


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` is written atomically and survives a resume.

    Args:
        save_dir, name, version: as for ``CSVLogger``.
        resume_step: the global step of the checkpoint a resumed run starts from: the rows
            logged before it are kept (``None``: a new run, the file starts empty).
    """

    def __init__(self, save_dir: Any, name: str, version: str, resume_step: int | None) -> None:
        super().__init__(save_dir, name=name, version=version)
        self._earlier = read_metrics_rows(Path(self.log_dir) / METRICS_FILE, resume_step)

    @property
    @rank_zero_experiment
    def experiment(self) -> _MetricsWriter:  # type: ignore[override]
        if self._experiment is None:
            self._experiment = _MetricsWriter(self.log_dir, self._earlier)
        return self._experiment
