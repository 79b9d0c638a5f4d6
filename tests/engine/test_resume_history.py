"""A resumed run keeps its metrics history and continues the schedule it had."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import TinyNet, make_run, make_tree, read_metrics  # noqa: E402

from rrsis.engine.config import TrainRun  # noqa: E402
from rrsis.engine.train import train  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class _StepLog(pl.Callback):
    """(global step, epoch, lr) of every training batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, float]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.seen.append((trainer.global_step, trainer.current_epoch, lr))


def _filled(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Rows without their empty cells (later parts of a run add columns)."""
    return [{k: v for k, v in row.items() if v} for row in rows]


def _train(run: TrainRun) -> tuple[_StepLog, list[str]]:
    log = _StepLog()
    torch.manual_seed(0)  # the same initial weights
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(run, model=TinyNet(), callbacks=[log])
    return log, [str(w.message) for w in caught]


def test_max_steps_resume_keeps_history_schedule_and_epochs(tmp_path: Path):
    """8 samples, batch 4: 2 steps per epoch, 3 epochs planned. One run stops after step 1
    (mid-epoch 0) and is resumed to step 5; it must match a run that went to step 5 at once."""
    tree = make_tree(tmp_path / "tree")
    options = dict(
        batch_size=4, lr=0.05, workers=0, seed=3, input_size=32, epochs=3, progress=False,
        ckpt_every_n_steps=1,  # a metrics row every step
    )  # fmt: skip
    full, _ = _train(make_run([tree], tmp_path / "full", max_steps=5, **options))
    cut, cut_warnings = _train(make_run([tree], tmp_path / "cut", max_steps=1, **options))
    first_rows = _filled(read_metrics(tmp_path / "cut"))
    resumed, warned = _train(
        TrainRun(out=tmp_path / "cut", resume=True, progress=False, max_steps=5)
    )

    # The schedule goes on: every step has the lr (and epoch number) of the uninterrupted run.
    assert [s for s, _, _ in cut.seen + resumed.seen] == [0, 1, 2, 3, 4]
    assert [e for _, e, _ in cut.seen + resumed.seen] == [e for _, e, _ in full.seen]
    lrs = [lr for _, _, lr in cut.seen + resumed.seen]
    assert lrs == pytest.approx([lr for _, _, lr in full.seen], rel=1e-9)
    assert min(lrs) > 0.0
    assert not [w for w in cut_warnings + warned if "val/mIoU" in w]

    # The history holds both parts: the first part's rows unchanged, then the same step rows
    # and validation rows as the uninterrupted run.
    rows = _filled(read_metrics(tmp_path / "cut"))
    assert first_rows and rows[: len(first_rows)] == first_rows
    full_rows = read_metrics(tmp_path / "full")

    def steps(table):
        return [(r["epoch"], r["step"], r["lr"]) for r in table if r.get("lr")]

    def vals(table):
        return [(r["epoch"], r["step"], r["val/mIoU"]) for r in table if r.get("val/mIoU")]

    assert steps(rows) == steps(full_rows) and len(steps(rows)) == 5
    assert vals(rows) == vals(full_rows) and len(vals(rows)) == 2
    epochs = sorted({int(r["epoch"]) for r in rows})
    assert epochs == [0, 1, 2]
