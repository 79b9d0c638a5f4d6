"""End-to-end tests of rrsis.engine.train on a tiny generated RefSegRS tree and a tiny model."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from rrsis.data.refsegrs import RefSegRS
from rrsis.data.refsegrs_writer import RefSegRSWriter
from rrsis.engine.callbacks import StopAfter
from rrsis.engine.config import TrainRun
from rrsis.engine.presets import resolve_recipe
from rrsis.engine.train import train
from rrsis.models import registry
from rrsis.models.base import RRSISModel
from rrsis.models.encoders.base import TextEncoder
from rrsis.models.io import load_model

HERE = Path(__file__).resolve().parent


class TinyText(TextEncoder):
    """Character embedding: a TextEncoder so that freezing / param groups see it."""

    out_dim = 4
    max_tokens = 8

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, self.out_dim)

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        ids = torch.zeros(len(texts), self.max_tokens, dtype=torch.long)
        for row, text in enumerate(texts):
            codes = [min(ord(c), 255) or 1 for c in text][: self.max_tokens]
            ids[row, : len(codes)] = torch.tensor(codes)
        return ids, (ids > 0).long()

    def forward(self, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        return self.embed(word_ids) * word_mask[..., None]


class TinyNet(RRSISModel):
    """Two convolutions + a sentence bias: learns "red square" masks in a few epochs."""

    input_size = 32
    size_divisor = 8

    def __init__(self) -> None:
        super().__init__()
        self.config = {"name": "tiny_test_net", "kwargs": {}}
        self.text = TinyText()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 2, 1)
        self.text_proj = nn.Linear(4, 2)

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        return self.text.tokenize(texts)

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        words = self.text(word_ids, word_mask).mean(1)
        x = torch.relu(self.norm(self.conv1(image)))
        return self.conv2(x) + self.text_proj(words)[:, :, None, None]


def make_tree(
    root: Path, n_train: int = 8, n_val: int = 4, n_test: int = 4, size: int = 32
) -> Path:
    """Write a RefSegRS tree whose masks are the red squares of noisy gray images."""
    rng = np.random.default_rng(0)
    with RefSegRSWriter(root) as writer:
        for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
            for i in range(count):
                image = rng.integers(60, 120, size=(size, size, 3), dtype=np.uint8)
                mask = np.zeros((size, size), dtype=bool)
                side = int(rng.integers(size // 4, size // 2))
                y, x = rng.integers(0, size - side, size=2)
                mask[y : y + side, x : x + side] = True
                image[mask] = (220, 30, 30)
                text = "the red roof" if split != "test" else "the red car"
                writer.add(
                    split,
                    {
                        "image": image,
                        "mask": mask,
                        "text": text,
                        "id": f"{split}{i}",
                        "meta": {"kind": "attribute"},
                    },
                )
    return root


def read_metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "logs" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


RUN_FIELDS = {f.name for f in dataclasses.fields(TrainRun)}


def make_run(data, out: Path, preset: str = "paper", model_name=None, **options) -> TrainRun:
    """A :class:`TrainRun`; ``options`` are its fields or, the others, recipe overrides."""
    run_options = {key: options.pop(key) for key in list(options) if key in RUN_FIELDS}
    recipe = resolve_recipe(preset, model_name, **options)
    return TrainRun(data, out, recipe, preset=preset, **run_options)


def _fit(tree: Path, out: Path, stop_after_steps: int | None = None, **kwargs):
    options = dict(batch_size=4, lr=0.05, workers=0, seed=3, input_size=32, progress=False)
    options.update(kwargs)
    torch.manual_seed(0)  # the model is built before train() seeds everything
    model = options.pop("model", None) or TinyNet()
    callbacks = [StopAfter(stop_after_steps)] if stop_after_steps else []
    return train(make_run([tree], out, **options), model=model, callbacks=callbacks), model


def test_overfit_loss_drops_and_exports_loadable_model(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = tmp_path / "run"
    best, model = _fit(tree, out, epochs=12)
    losses = [float(r["train/loss_epoch"]) for r in read_metrics(out) if r.get("train/loss_epoch")]
    assert len(losses) == 12
    assert losses[-1] < 0.5 * losses[0], losses
    # Checkpoint selection is by val mIoU and the best file is the one exported.
    record = json.loads((out / "hparams.json").read_text())
    assert record["monitor"] == "val/mIoU"
    assert record["best_val_mIoU"] > 50.0
    assert best.name.startswith("best-") and best.is_file()

    loaded_path = out / "model.safetensors"
    assert loaded_path.is_file()
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    reference = TinyNet()
    reference.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    image = torch.randn(2, 3, 32, 32)
    ids, mask = reference.tokenize(["the red roof", "x"])
    # load_model rebuilds models by registry name: register the local net for this test.
    monkeypatch.setitem(registry.MODELS, "tiny_test_net", registry.ModelEntry(TinyNet))
    exported = load_model(loaded_path)
    assert isinstance(exported, TinyNet)
    # The side of the training images rides along: Segmenter's window for large images.
    side = max(np.asarray(RefSegRS(tree, "train")[0]["image"]).shape[:2])
    assert exported.train_image_size == side
    with torch.no_grad():
        expected = reference.eval()(image, ids, mask)
        torch.testing.assert_close(exported.eval()(image, ids, mask), expected)


@pytest.mark.parametrize("background", [False, True], ids=["sync", "async"])
def test_resume_matches_uninterrupted_run(tree: Path, tmp_path: Path, background: bool):
    # 8 samples / batch 4 = 2 steps per epoch; stop "killed" after epoch 2 of 4. Checkpoints
    # written in a background thread (the default on GPUs) must hold the same states.
    full_best, full = _fit(tree, tmp_path / "full", epochs=4, async_checkpoints=background)
    _fit(tree, tmp_path / "cut", epochs=4, stop_after_steps=4, async_checkpoints=background)
    first = torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)
    assert first["global_step"] == 4
    assert first["optimizer_states"][0]["state"], "optimizer moments must be checkpointed"
    resumed_model = TinyNet()
    resumed = TrainRun(out=tmp_path / "cut", resume=True, progress=False)
    resumed.async_checkpoints = background
    train(resumed, model=resumed_model)
    record = json.loads((tmp_path / "cut/hparams.json").read_text())
    assert record["global_step"] == 8
    last = torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)
    full_last = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)
    assert last["epoch"] == full_last["epoch"]
    for key, value in full_last["state_dict"].items():
        torch.testing.assert_close(last["state_dict"][key], value, msg=key)


class _Killed(Exception):
    pass


class _KillAt(pl.Callback):
    """Raise before step ``step``, as a killed process would stop: no end-of-epoch checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise _Killed


class _BatchLog(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, module, batch, batch_idx) -> None:
        self.seen.append((trainer.global_step, float(batch["image"].double().sum())))


@pytest.mark.parametrize(("kill_at", "workers"), [(3, 0), (3, 2), (4, 0)])
def test_killed_run_resumes_on_the_same_batches(
    tree: Path, tmp_path: Path, kill_at: int, workers: int
):
    """A run killed mid-epoch (step 3 of 2-step epochs) or on an epoch boundary (step 4) and
    resumed from its step checkpoint trains on the same batches, with the same augmentation,
    as the run that was never interrupted, and ends with the same weights."""

    def run(out: Path) -> TrainRun:
        return make_run(
            [tree], out, batch_size=4, lr=0.05, workers=workers, seed=3, input_size=32,
            epochs=3, augment=True, ckpt_every_n_steps=1, progress=False,
        )  # fmt: skip

    def fit(out: Path, callbacks: list) -> _BatchLog:
        log = _BatchLog()
        torch.manual_seed(0)  # the same initial weights
        model = TinyNet()
        train(run(out), model=model, callbacks=[log, *callbacks])
        return log

    full = fit(tmp_path / "full", [])
    with pytest.raises(_Killed):
        fit(tmp_path / "cut", [_KillAt(kill_at)])
    cut = torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)
    assert cut["global_step"] == kill_at
    resumed = _BatchLog()
    train(
        TrainRun(out=tmp_path / "cut", resume=True, progress=False),
        model=TinyNet(),
        callbacks=[resumed],
    )
    assert len(full.seen) == 6 and resumed.seen == full.seen[kill_at:]
    last = torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)
    full_last = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == full_last["global_step"] == 6
    for key, value in full_last["state_dict"].items():
        torch.testing.assert_close(last["state_dict"][key], value, msg=key)


def test_selection_never_reads_test_split(tree: Path, tmp_path: Path, monkeypatch):
    import rrsis.engine.datamodule as dm

    opened = []
    real = dm.open_split

    def spy(root, split):
        opened.append(split)
        return real(root, split)

    monkeypatch.setattr(dm, "open_split", spy)
    _fit(tree, tmp_path / "run", epochs=1)
    assert sorted(set(opened)) == ["train", "val"]
    rows = read_metrics(tmp_path / "run")
    assert any(r.get("val/mIoU") for r in rows)
    assert not any(key.startswith("test") for key in rows[0])


def test_existing_run_needs_resume(tree: Path, tmp_path: Path):
    from rrsis.errors import OutputExistsError, RRSISError

    with pytest.raises(RRSISError, match="nothing to resume"):
        train(TrainRun([tree], tmp_path / "none", resume=True), model=TinyNet())
    _fit(tree, tmp_path / "run", epochs=1)
    with pytest.raises(OutputExistsError):
        _fit(tree, tmp_path / "run", epochs=1)


def fake_fit_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Give FitScheduleToTime a clock on which every reading is 10 s after the previous one (so
    10 s per epoch); returns the clock's state, ``[seconds]``, to reset it."""
    import functools

    import rrsis.engine.train as train_module

    now = [0.0]

    def clock() -> float:
        now[0] += 10.0
        return now[0]

    monkeypatch.setattr(
        train_module,
        "FitScheduleToTime",
        functools.partial(train_module.FitScheduleToTime, clock=clock),
    )
    return now


def tiny_run(tree: Path, run_dir: Path, epochs: int = 1) -> Path:
    """A finished tiny ``lgce_effnet_minilm`` run (batch 4, 64 px) on ``tree``; returns its dir."""
    run = make_run(
        [tree], run_dir, model_name="lgce_effnet_minilm", epochs=epochs, batch_size=4,
        input_size=64, workers=0, tiny=True, progress=False,
    )  # fmt: skip
    train(run)
    return run_dir


def test_fit_to_time_ends_early_with_the_schedule_completed(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Epochs slower than planned: the run stops on an epoch boundary with the lr decayed to 0."""
    fake_fit_clock(monkeypatch)
    out = tmp_path / "run"
    # 10 planned epochs of 2 steps; a 50 s budget less 5 % holds 4 epochs of 10 s.
    _fit(tree, out, epochs=10, max_time="00:00:50", fit_to_time=True)
    record = json.loads((out / "hparams.json").read_text())
    assert record["trainer"]["fit_to_time"] is True
    assert record["fit_to_time_events"] == [
        {
            "after_epoch": 0,
            "epoch_s": 10.0,
            "epochs": "10 -> 4",
            "fits": 4,
            "schedule_start_step": 2,
            "schedule_end_step": 8,
        }
    ]
    assert record["global_step"] == 8
    val_rows = [r for r in read_metrics(out) if r.get("val/mIoU")]
    assert len(val_rows) == 4
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    scheduler = state["lr_schedulers"][0]
    assert scheduler["last_epoch"] == 8
    # The planned 20-step schedule would still be at (1 - 8/20) ** 0.9 = 63 % of the lr.
    assert scheduler["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)


def test_fit_to_time_resume_keeps_the_shortened_schedule(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A run cut after its schedule was shortened resumes on the short schedule (it must not go
    back to the planned epochs and lr: the lr would jump up after the resume)."""
    now = fake_fit_clock(monkeypatch)
    out = tmp_path / "run"
    # Shortened to 4 epochs (8 steps) after epoch 0, then "killed" after step 4 (epoch 1).
    _fit(tree, out, epochs=10, max_time="00:00:50", fit_to_time=True, stop_after_steps=4)
    cut = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert cut["global_step"] == 4
    lr_at_cut = cut["lr_schedulers"][0]["_last_lr"][0]
    # The short schedule at step 4 of 8: 0.05 * (1 - 2/20) ** 0.9 * (1 - 2/6) ** 0.9.
    assert lr_at_cut == pytest.approx(0.05 * 0.9**0.9 * (2 / 3) ** 0.9, rel=1e-6)
    # The earlier part trained 2 epochs of 10 s on the fake clock: tell Lightning's Timer so (it
    # measured real seconds), as a real run's checkpoint would.
    cut["callbacks"]["Timer"]["time_elapsed"]["train"] = 20.0
    torch.save(cut, out / "checkpoints" / "last.ckpt")
    now[0] = 0.0

    class LrLog(pl.Callback):
        def __init__(self) -> None:
            self.lrs: list[float] = []

        def on_train_batch_start(self, trainer, *args) -> None:
            self.lrs.append(trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0])

    lr_log = LrLog()
    resume = TrainRun(out=out, resume=True, progress=False, max_time="00:00:50", fit_to_time=True)
    train(resume, model=TinyNet(), callbacks=[lr_log])
    record = json.loads((out / "hparams.json").read_text())
    # It went on from the short schedule's lr, and ended where that schedule ends, with the lr
    # at 0. The planned schedule would have gone back to 0.05 * (1 - 4/20) ** 0.9 = 82 % of the
    # peak.
    short = [0.05 * 0.9**0.9 * (1 - (step - 2) / 6) ** 0.9 for step in range(4, 8)]
    assert lr_log.lrs == pytest.approx(short, rel=1e-6) and short[0] == pytest.approx(lr_at_cut)
    assert record["global_step"] == 8 and record["epochs_done"] == 4
    assert record["fit_to_time_events"][0]["epochs"] == "10 -> 4"  # the earlier part's, kept
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)


def test_fit_to_time_needs_max_time(tree: Path, tmp_path: Path):
    from rrsis.errors import RRSISError

    with pytest.raises(RRSISError, match="needs a time budget"):
        _fit(tree, tmp_path / "run", epochs=2, fit_to_time=True)


def test_channels_last_training_changes_the_layout_not_the_result():
    from rrsis.engine.module import RRSISLightningModule

    # In float64, where the rounding of another summation order stays far below the tolerance
    # (in float32 it is amplified to about 2 % of the first layers' gradients of this model).
    torch.manual_seed(0)
    reference = registry.get_tiny_model("lgce_effnet_minilm").double()
    image = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ids, mask = reference.tokenize(["the red roof", "a long road"])
    target = torch.rand(2, 64, 64) > 0.7
    results = {}
    for layout in (False, True):
        config = resolve_recipe("paper", "lgce_effnet_minilm", channels_last=layout)
        model = registry.get_tiny_model("lgce_effnet_minilm").double()
        model.load_state_dict(reference.state_dict())
        module = RRSISLightningModule(model, config).train()
        torch.manual_seed(1)  # the same stochastic-depth draws
        loss = module.criterion(module(image, ids, mask), target)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        # (Depthwise kernels, one input channel, are contiguous in both layouts.)
        convs = [p for p in module.parameters() if p.ndim == 4 and p.shape[1] > 1]
        fmt = torch.channels_last if layout else torch.contiguous_format
        assert convs and all(p.is_contiguous(memory_format=fmt) for p in convs)
        assert layout == convs[0].is_contiguous(memory_format=torch.channels_last)
        results[layout] = (loss.detach(), grads)
    # The same loss and gradients up to rounding: only the memory layout differs.
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-12, atol=0.0)
    assert results[True][1].keys() == results[False][1].keys()
    for name, grad in results[False][1].items():
        error = float((results[True][1][name] - grad).norm())
        assert error <= 1e-9 * float(grad.norm()) + 1e-15, (name, error, float(grad.norm()))
