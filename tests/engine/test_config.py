"""The typed run configuration: recipes with overrides, run checks, resuming from hparams.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rrsis.cli import build_parser
from rrsis.cli.train import build_run
from rrsis.engine.config import TrainRun, max_time_seconds, resumed_run
from rrsis.engine.presets import TrainConfig, get_preset, resolve_recipe
from rrsis.errors import RRSISError


def test_resolve_recipe_keeps_unset_options_and_refuses_unknown_ones() -> None:
    paper = get_preset("paper", "lgce_effnet_minilm")
    recipe = resolve_recipe("paper", "lgce_effnet_minilm", epochs=2, lr=None, augment=False)
    assert recipe.epochs == 2 and recipe.lr == paper.lr and recipe.augment is False
    assert resolve_recipe("default") == get_preset("default")
    with pytest.raises(RRSISError, match="bogus"):
        resolve_recipe("default", bogus=1)
    with pytest.raises(RRSISError, match="unknown preset"):
        resolve_recipe("fast")


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("batch_size", -1), ("lr", 0.0), ("photometric", 1.0), ("balance", 1.5)],
)
def test_recipe_values_out_of_range_are_one_line_errors(field: str, value: float) -> None:
    with pytest.raises(RRSISError, match=field):
        resolve_recipe("default", **{field: value})


def test_run_checks_its_settings_before_any_work(tmp_path: Path) -> None:
    run = TrainRun(["a", "b"], tmp_path, devices="2")
    assert run.data == (Path("a"), Path("b")) and run.devices == 2 and run.out == tmp_path
    assert run.recipe == get_preset("default")
    with pytest.raises(RRSISError, match="training data"):
        TrainRun([], tmp_path)
    with pytest.raises(RRSISError, match="time budget"):
        TrainRun(["a"], tmp_path, fit_to_time=True)
    with pytest.raises(RRSISError, match="HH:MM:SS"):
        TrainRun(["a"], tmp_path, max_time="90 minutes")
    with pytest.raises(RRSISError, match="nope"):
        TrainRun(["a"], tmp_path, recipe_fields={"nope"})
    assert max_time_seconds("01:02:03") == 3723 and max_time_seconds("1:00:00:00") == 86400


def test_resume_takes_recipe_and_data_from_hparams_of_older_runs(tmp_path: Path) -> None:
    """A run saved before ``preset``, ``tiny`` or ``semantic_labels`` were recorded resumes."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    recipe = get_preset("paper", "lgce_effnet_minilm")
    record = {"train": recipe.to_dict(), "data_roots": ["d1", "d2"], "val_root": "v"}
    (tmp_path / "hparams.json").write_text(json.dumps(record))
    run = resumed_run(TrainRun(out=tmp_path, resume=True, max_time="00:10:00"))
    assert run.recipe == recipe and isinstance(run.recipe, TrainConfig)
    assert run.data == (Path("d1"), Path("d2")) and run.val == Path("v")
    assert run.preset == "default" and run.max_time == "00:10:00" and not run.tiny
    with pytest.raises(RRSISError, match="nothing to resume"):
        resumed_run(TrainRun(out=tmp_path / "empty", resume=True))


def _args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def test_cli_builds_the_run_from_the_preset_and_the_options_given(tmp_path: Path) -> None:
    argv = [
        "--data",
        "d",
        "--out",
        str(tmp_path),
        "--preset",
        "paper",
        "--model",
        "lgce_effnet_minilm",
    ]
    run = build_run(_args([*argv, "--epochs", "3", "--devices", "2", "--no-progress"]))
    assert run.recipe == resolve_recipe("paper", "lgce_effnet_minilm", epochs=3)
    assert run.recipe_fields == {"epochs", "model_name"}
    assert run.devices == 2 and run.progress is False and run.preset == "paper"
    labels = build_run(_args([*argv, "--semantic-labels", "src"]))
    assert labels.recipe.semantic_weight == 0.5 and labels.semantic_labels == Path("src")
    default = build_run(_args(["--out", str(tmp_path)]))
    assert default.data == (Path("data/dubai"), Path("data/synth"))
    assert default.val == Path("data/dubai")
    with pytest.raises(RRSISError, match="--data is required"):
        build_run(_args(["--out", str(tmp_path), "--preset", "paper"]))


def test_precision_auto_is_fp32_without_a_gpu_and_explicit_values_stay() -> None:
    from rrsis.engine.presets import get_preset
    from rrsis.engine.train import resolve_precision

    assert get_preset("paper").precision == "auto"
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("32-true", "gpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_checkpoints_are_written_in_the_background_only_where_asked_or_on_a_gpu(tmp_path) -> None:
    from rrsis.engine.runfiles import AtomicCheckpointIO, BackgroundCheckpointIO
    from rrsis.engine.train import checkpoint_io

    def run(**options):
        return TrainRun(data=[tmp_path], out=tmp_path / "run", accelerator="cpu", **options)

    assert type(checkpoint_io(run())) is AtomicCheckpointIO  # a CPU run: no copy, no thread
    background = checkpoint_io(run(async_checkpoints=True))
    assert type(background) is BackgroundCheckpointIO
    assert isinstance(background, AtomicCheckpointIO)  # still atomic
    assert type(checkpoint_io(run(async_checkpoints=False))) is AtomicCheckpointIO


def test_background_checkpoint_holds_the_state_of_the_save_call(tmp_path, monkeypatch) -> None:
    """Training goes on while the thread writes: what it writes must be the state at the call."""
    import threading

    import torch

    from rrsis.engine.runfiles import AtomicCheckpointIO
    from rrsis.engine.train import checkpoint_io

    release = threading.Event()
    write = AtomicCheckpointIO.save_checkpoint

    def slow_write(self, checkpoint, path, storage_options=None):
        release.wait(10)  # the write starts only after the training loop moved on
        write(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", slow_write)
    run = TrainRun(data=[tmp_path], out=tmp_path / "run", async_checkpoints=True)
    writer = checkpoint_io(run)
    weight = torch.zeros(4, 4)
    moment = {"exp_avg": torch.ones(3)}
    writer.save_checkpoint({"state_dict": {"w": weight}, "opt": moment}, tmp_path / "a.ckpt")
    weight.add_(5.0)  # the next optimiser step, in place
    moment["exp_avg"].mul_(0.0)
    release.set()
    writer.teardown()
    saved = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert torch.equal(saved["state_dict"]["w"], torch.zeros(4, 4))
    assert torch.equal(saved["opt"]["exp_avg"], torch.ones(3))


def _held_writes(monkeypatch):
    """Make the atomic writer wait until the returned event is set (a slow disk)."""
    import threading

    from rrsis.engine.runfiles import AtomicCheckpointIO

    release = threading.Event()
    write = AtomicCheckpointIO.save_checkpoint

    def slow_write(self, checkpoint, path, storage_options=None):
        release.wait(10)
        write(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", slow_write)
    return release


def test_background_removal_waits_for_the_write_it_follows(tmp_path, monkeypatch) -> None:
    """A best checkpoint replaced while still being written must not be left behind."""
    import torch

    from rrsis.engine.train import checkpoint_io

    release = _held_writes(monkeypatch)
    writer = checkpoint_io(TrainRun(data=[tmp_path], out=tmp_path / "run", async_checkpoints=True))
    state = {"state_dict": {"w": torch.zeros(2)}}
    writer.save_checkpoint(state, tmp_path / "best-000.ckpt")
    writer.save_checkpoint(state, tmp_path / "best-001.ckpt")
    writer.remove_checkpoint(tmp_path / "best-000.ckpt")  # as ModelCheckpoint does at once
    release.set()
    writer.teardown()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-001.ckpt"]


def test_background_write_error_reaches_the_training_thread(tmp_path) -> None:
    import torch

    from rrsis.engine.train import checkpoint_io

    writer = checkpoint_io(TrainRun(data=[tmp_path], out=tmp_path / "run", async_checkpoints=True))
    (tmp_path / "a-file").write_text("")
    writer.save_checkpoint({"w": torch.zeros(2)}, tmp_path / "a-file" / "a.ckpt")
    with pytest.raises(OSError):
        writer.teardown()
    writer.teardown()  # reported once; the writer can be torn down again


def test_progress_bar_refreshes_every_few_steps_on_a_gpu_only(tmp_path, monkeypatch) -> None:
    import torch
    from pytorch_lightning.callbacks import TQDMProgressBar

    from rrsis.engine.train import GPU_PROGRESS_REFRESH, progress_callbacks

    def run(**options):
        return TrainRun(data=[tmp_path], out=tmp_path / "run", **options)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert progress_callbacks(run(accelerator="auto")) == []  # Lightning's bar, every step
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    (bar,) = progress_callbacks(run(accelerator="gpu"))
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == GPU_PROGRESS_REFRESH > 1
    assert progress_callbacks(run(accelerator="gpu", progress=False)) == []
    assert progress_callbacks(run(accelerator="cpu")) == []
