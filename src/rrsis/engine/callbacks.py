"""Lightning callbacks of a training run: fit the schedule to a time budget, stop on request,
checkpoint a run that stops mid-epoch where it stopped."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, Timer
from pytorch_lightning.utilities import rank_zero_info


class FitScheduleToTime(pl.Callback):
    """End a time-budgeted run on an epoch boundary, with its poly schedule completed.

    The epoch count of a run with a wall-time budget is planned before training (e.g. from a few
    timed steps). When real epochs turn out slower, ``max_time`` alone cuts the run mid-schedule
    with the learning rate still high. After every training epoch (its validation included) this
    callback projects the mean epoch time onto what is left of ``budget_s`` (less a ``margin``
    fraction) and, if the planned epochs no longer fit, lowers ``max_epochs`` and re-targets the
    per-step poly schedule: from the current multiplier ``f0`` at step ``s0`` it decays as
    ``f0 * (1 - (s - s0) / (end - s0)) ** power``, reaching 0 at the new last step. When a run was
    shortened because its early epochs were slow (other work on the machine) and later ones make
    up for it, it gives epochs back the same way, never beyond the planned count and never after
    the last epoch of the current schedule (whose lr has reached 0). Each change is kept in
    ``events``.

    A resumed run counts the training time of its earlier part (Lightning's ``Timer`` keeps it in
    the checkpoint, as it does for ``max_time``), and continues on the schedule it had: the
    re-targets are stored in the checkpoint (:meth:`state_dict`) and applied again, in order, when
    training restarts, with the shortened ``max_epochs``.

    Args:
        budget_s: the run's wall-time budget in seconds, counted from the start of training.
        power: the schedule's poly exponent.
        margin: fraction of the budget kept free (the final export, timing noise).
        clock: time source, ``time.monotonic`` by default (tests pass a fake one).
    """

    def __init__(
        self, budget_s: float, power: float = 0.9, margin: float = 0.05, clock=None
    ) -> None:
        self.budget_s = float(budget_s)
        self.power = power
        self.margin = margin
        self.clock = clock or time.monotonic
        self.events: list[dict[str, Any]] = []
        self._start = 0.0
        self._first_epoch = 0
        self._before = 0.0
        self._to_reapply: list[dict[str, Any]] = []
        self._planned: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"events": [dict(event) for event in self.events]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events = [dict(event) for event in state_dict.get("events", [])]
        self._to_reapply = list(self.events)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self.clock()
        self._first_epoch = trainer.current_epoch
        # Training time spent before a resume (0 for a fresh run).
        timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
        self._before = float(timers[0]._offset) if timers else 0.0
        self._planned = trainer.fit_loop.max_epochs
        # A resumed run: the schedulers were rebuilt as planned; re-target them again, in order.
        for event in self._to_reapply:
            self._retarget_schedulers(
                trainer, event["schedule_start_step"], event["schedule_end_step"]
            )
            trainer.fit_loop.max_epochs = event["fits"]
        self._to_reapply = []

    def _retarget_schedulers(self, trainer: pl.Trainer, start: int, end: int) -> None:
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                scheduler.lr_lambdas = [
                    retarget_poly(fn, start, end, self.power) for fn in scheduler.lr_lambdas
                ]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done = trainer.current_epoch + 1 - self._first_epoch
        elapsed = self.clock() - self._start
        per_epoch = elapsed / max(1, done)
        left = self.budget_s * (1.0 - self.margin) - elapsed - self._before
        fits = trainer.current_epoch + 1 + max(0, int(left // per_epoch))
        # Every rank must agree (their clocks differ slightly).
        fits = int(trainer.strategy.broadcast(fits, src=0))
        current = trainer.fit_loop.max_epochs
        if current is None or current < 0:
            return
        planned = self._planned if self._planned is not None and self._planned > 0 else current
        fits = min(fits, planned)
        last = trainer.current_epoch + 1 >= current  # the schedule has reached lr 0
        if fits == current or (fits > current and last):
            return
        trainer.fit_loop.max_epochs = fits
        steps_per_epoch = max(1, trainer.num_training_batches // trainer.accumulate_grad_batches)
        end = fits * steps_per_epoch
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        start = int(schedulers[0].last_epoch) if schedulers else int(trainer.global_step)
        self._retarget_schedulers(trainer, start, end)
        self.events.append(
            {
                "after_epoch": int(trainer.current_epoch),
                "epoch_s": round(per_epoch, 1),
                "epochs": f"{current} -> {fits}",
                "fits": fits,
                "schedule_start_step": start,
                "schedule_end_step": end,
            }
        )
        what = "do not fit the budget" if fits < current else "leave time for more"
        rank_zero_info(
            f"fit to time: {per_epoch:.0f} s per epoch, {current} epochs {what} (planned "
            f"{planned}); ending after epoch {fits} (step {end}), the lr schedule re-targeted"
        )


def retarget_poly(fn, start: int, end: int, power: float):
    """A multiplier equal to ``fn(start)`` at ``start`` that decays poly-wise to 0 at ``end``."""
    f0 = fn(start)
    span = max(1, end - start)

    def factor(step: int) -> float:
        if step <= start:
            return fn(step)
        return f0 * max(0.0, 1.0 - (step - start) / span) ** power

    return factor


class StopAfter(pl.Callback):
    """Request a stop after ``steps`` optimiser steps (simulates an interrupted run)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def stops_mid_epoch(trainer: pl.Trainer) -> bool:
    """Training ends after the current batch though its epoch is not over (``max_steps``, a
    stop request, ``max_time``)."""
    ending = trainer.should_stop or (0 <= trainer.max_steps <= trainer.global_step)
    return ending and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that records a run stopped mid-epoch as stopped mid-epoch.

    Lightning ends the epoch of a run stopped by ``max_steps`` (or a stop request) as if it
    were complete: its end-of-epoch checkpoint and the ``last.ckpt`` written when training
    ends count the epoch done, so a resume skipped the rest of that epoch (and its number), and
    the monitor was missing because validation did not run. Here, with ``save_on_stop``, the
    last step's ``last.ckpt`` is written where the step checkpoints are (after the batch), and
    no checkpoint is written at the end of the cut epoch: a resume goes on within it.
    """

    def __init__(self, *args: Any, save_on_stop: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_on_stop = save_on_stop

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if self.save_on_stop and stops_mid_epoch(trainer):
            if self._last_global_step_saved != trainer.global_step:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not stops_mid_epoch(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not stops_mid_epoch(trainer):
            super().on_validation_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not stops_mid_epoch(trainer):
            super().on_train_end(trainer, pl_module)
