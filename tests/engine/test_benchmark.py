"""``rrsis benchmark`` (``rrsis.engine.benchmark``) end to end on tiny models."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from rrsis.cli import main
from rrsis.engine.benchmark import parse_checkpoints, parse_models
from rrsis.errors import RRSISError
from rrsis.models import io as model_io
from rrsis.models import registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import make_tree  # noqa: E402

TINY = "lgce_swin_base"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RefSegRS tree with train, val and test splits (4 test samples)."""
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    model_io.save_model(registry.get_tiny_model(TINY), path)
    return path


def test_parse_models_and_checkpoints() -> None:
    assert parse_models("a, b") == ["a", "b"]
    assert parse_checkpoints("a=x.safetensors") == {"a": Path("x.safetensors")}
    assert parse_checkpoints(None) == {}
    for bad in ("", "a,,b", "a,a"):
        with pytest.raises(RRSISError):
            parse_models(bad)
    with pytest.raises(RRSISError):
        parse_checkpoints("a=x,a=y")


def test_benchmark_with_checkpoints(tiny_weights: Path, tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = [
        "benchmark", "--models", "a,b", "--data", str(tree), "--out", str(out),
        "--checkpoints", f"a={tiny_weights},b={tiny_weights}", "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["model"] for r in rows] == ["a", "b"]
    # Same weights, same data: identical rows.
    assert {k: v for k, v in rows[0].items() if k != "model"} == {
        k: v for k, v in rows[1].items() if k != "model"
    }
    assert "small mIoU" in rows[0] and "scattered mIoU" in rows[0]
    table = (out / "table.md").read_text()
    assert "| a |" in table and "| b |" in table
    assert (out / "size_buckets.png").read_bytes()[:4] == b"\x89PNG"
    command = (out / "command.txt").read_text()
    assert command.startswith("rrsis benchmark --models a,b") and "wall time" in command
    assert json.loads((out / "results" / "a.json").read_text())["split"] == "test"


def test_benchmark_argument_errors(tree: Path, tiny_weights: Path, tmp_path, capsys) -> None:
    base = ["benchmark", "--data", str(tree), "--out", str(tmp_path / "b"), "--no-progress"]
    assert main([*base, "--models", "a,a"]) == 2
    assert "twice" in capsys.readouterr().err
    assert main([*base, "--models", "not_a_model"]) == 2
    assert "cannot train unknown model" in capsys.readouterr().err
    assert main([*base, "--models", "a", "--checkpoints", f"c={tiny_weights}"]) == 2
    assert "not in --models" in capsys.readouterr().err
    assert main([*base, "--models", "a", "--checkpoints", "a"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_benchmark_trains_tiny_model(tree: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    argv = [
        "benchmark", "--models", TINY, "--data", str(tree), "--out", str(out),
        "--epochs", "1", "--batch-size", "2", "--tiny", "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    run = out / "runs" / TINY
    assert (run / "model.safetensors").is_file()
    hparams = json.loads((run / "hparams.json").read_text())
    result = json.loads((out / "results" / f"{TINY}.json").read_text())
    # Scored at the size it was trained at.
    assert result["input_size"] == hparams["train"]["input_size"]
    assert result["n"] == 4
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert rows[0]["model"] == TINY
    # A second run reuses the finished training instead of retraining.
    mtime = (run / "model.safetensors").stat().st_mtime_ns
    assert main(argv) == 0
    assert (run / "model.safetensors").stat().st_mtime_ns == mtime
