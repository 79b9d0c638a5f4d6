"""scripts/gpu_train.py: the frozen text encoder's feature cache and the path rewriting.

The GPU run itself needs a lent GPU machine; what it relies on is tested here on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def gpu_train():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("gpu_train", SCRIPTS / "gpu_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(SCRIPTS))


def test_text_cache_reproduces_the_frozen_encoder_and_refuses_unknown_text(
    gpu_train, tmp_path: Path, monkeypatch
):
    from rrsis.models.encoders import text
    from rrsis.models.registry import get_tiny_model

    # install_text_cache patches the encoder classes: restore them after the test.
    monkeypatch.setattr(text, "AutoModel", text.AutoModel)
    monkeypatch.setattr(text.HFTextEncoder, "forward", text.HFTextEncoder.forward)
    model = get_tiny_model("lgce_effnet_minilm").eval()
    texts = ["water near the building", "long road", "the vegetation on the left"]
    gpu_train.write_text_cache(model.text, texts, tmp_path / "cache.safetensors")
    ids, mask = model.tokenize(texts[::-1])
    image = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        reference = model(image, ids, mask)
        gpu_train.install_text_cache(tmp_path / "cache.safetensors")
        cached = model(image, ids, mask)
    torch.testing.assert_close(cached, reference)
    ids, mask = model.tokenize(["a text that was never cached"])
    with pytest.raises(RuntimeError, match="not in the text cache"):
        model.text(ids, mask)


def test_relocate_hparams_names_this_checkout(gpu_train, tmp_path: Path):
    there = "/root/work/repo"
    path = tmp_path / "hparams.json"
    path.write_text(
        json.dumps(
            {
                "data_roots": [f"{there}/data/dubai_dense", f"{there}/data/synth"],
                "val_root": f"{there}/data/dubai",
                "semantic_labels": f"{there}/.gpu/dubai-aerial",
                "train": {"batch_size": 16},
            }
        )
    )
    gpu_train.relocate_hparams(path, tmp_path / "here", "b16_photo")
    hparams = json.loads(path.read_text())
    here = str(tmp_path / "here")
    assert hparams["data_roots"] == [f"{here}/data/dubai_dense", f"{here}/data/synth"]
    assert hparams["val_root"] == f"{here}/data/dubai"
    assert hparams["semantic_labels"] == str(gpu_train.SHARED_DUBAI)
    assert hparams["gpu_train"]["variant"] == "b16_photo"
    assert hparams["gpu_train"]["overrides"] == gpu_train.VARIANTS["b16_photo"]
    gpu_train.relocate_hparams(path, tmp_path / "elsewhere", "b16_photo")  # done once only
    assert json.loads(path.read_text())["val_root"] == f"{here}/data/dubai"


def test_variants_are_valid_train_default_arguments(gpu_train):
    import train_default

    for name, overrides in gpu_train.VARIANTS.items():
        args = train_default.parse_args(["--train-only", *overrides])
        assert args.batch_size and args.lr and args.workers, name
        assert args.preload and args.fit_to_time, name


def test_fit_epochs_gives_each_run_its_share_of_the_device(gpu_train, monkeypatch):
    import itertools
    import types

    import train_default

    import rrsis.engine.timing as timing
    from rrsis.engine.presets import get_preset

    # A clock on which every timed training step takes exactly one second.
    ticks = itertools.count()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    config = get_preset("default")
    config.epochs, config.input_size, config.batch_size = 10_000, 64, 8

    def fitted(share: int) -> int:
        return train_default.fit_epochs(config.model_name, config, 16, 1000.0, True, share)

    # 2 steps per epoch at 1 s each (+15 % for validation and loading), in 85 % of 1000 s.
    assert fitted(1) == int(850 / 2.3)
    assert fitted(3) == int(850 / 6.9)
    assert all("--preload" in overrides for overrides in gpu_train.VARIANTS.values())


def test_a_run_cut_short_is_exported_from_its_best_checkpoint(gpu_train, tmp_path: Path):
    """No model.safetensors (the run was stopped): the parts come from checkpoints/best-*.ckpt."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_train import make_tree, tiny_run

    from rrsis.models.io import load_model

    torch.set_num_threads(1)
    tree = make_tree(tmp_path / "tree")
    run_dir = tiny_run(tree, tmp_path / "runs" / "gpu" / "b8")
    (run_dir / "model.safetensors").unlink()
    out = tmp_path / "out"
    out.mkdir()
    gpu_train.export_run(run_dir, "b8", out)
    parts = sorted(out.glob("b8.part*"))
    assert parts
    (tmp_path / "back.safetensors").write_bytes(b"".join(p.read_bytes() for p in parts))
    back = load_model(tmp_path / "back.safetensors")
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in back.state_dict().items():
        torch.testing.assert_close(value, state["model." + key], msg=key)


def test_training_budget_against_the_call_deadline(gpu_train):
    import argparse

    def seconds(elapsed: float, **flags) -> int:
        args = dict(budget=540, deadline=560, continued=False, resume=False) | flags
        return gpu_train.training_seconds(argparse.Namespace(**args), elapsed)

    # One call: what the deadline leaves after the data (110 s) and the overhead.
    assert seconds(110) == 560 - 110 - gpu_train.DEADLINE_OVERHEAD
    assert seconds(110, deadline=None) == 540
    assert seconds(10, deadline=900) == 540  # never more than the budget
    # A run spread over two calls keeps its total budget in both (the Timer counts across).
    assert seconds(110, continued=True) == 540
    assert seconds(20, deadline=245, resume=True) == 540
