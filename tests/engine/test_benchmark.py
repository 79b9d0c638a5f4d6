"""``rrsis benchmark`` (``rrsis.engine.benchmark``) end to end on tiny models."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from rrsis.cli import main
from rrsis.engine.benchmark_config import (
    BUDGETS,
    BenchmarkConfig,
    parse_list,
    parse_pairs,
    parse_seeds,
)
from rrsis.errors import RRSISError
from rrsis.models import io as model_io
from rrsis.models import registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import make_tree  # noqa: E402

TINY = "lgce_swin_base"
MODELS = ("lavt_swin_base", "lgce_swin_base")


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


def test_parsers() -> None:
    assert parse_list("a, b", "--models") == ["a", "b"]
    assert parse_list(None, "--models") == []
    assert parse_pairs("a=x.safetensors", "--checkpoints") == {"a": "x.safetensors"}
    assert parse_seeds("0,1") == [0, 1] and parse_seeds("0-2") == [0, 1, 2]
    for bad in ("a,,b", "a,a"):
        with pytest.raises(RRSISError):
            parse_list(bad, "--models")
    with pytest.raises(RRSISError, match="twice"):
        parse_pairs("a=x,a=y", "--checkpoints")
    with pytest.raises(RRSISError, match="integers"):
        parse_seeds("0,x")
    with pytest.raises(RRSISError, match="twice"):
        parse_seeds("0,0-1")


def test_config_budget_recipe_is_the_same_for_every_model(tmp_path: Path) -> None:
    config = BenchmarkConfig(data=tmp_path, out=tmp_path / "o", budget="cpu", seeds=(0, 1))
    assert config.models == BUDGETS["cpu"].models and config.reference == config.models[0]
    recipes = [config.recipe(name, 1) for name in config.models]
    for field in ("epochs", "input_size", "batch_size", "lr", "dice_weight", "preload", "seed"):
        assert len({getattr(r, field) for r in recipes}) == 1, field
    assert recipes[0].epochs == 3 and recipes[0].input_size == 128 and recipes[0].seed == 1
    # An explicit value replaces the budget's for all; a model argument reaches every factory.
    config = BenchmarkConfig(
        data=tmp_path, out=tmp_path, budget="gpu", epochs=5, model_kwargs={"pretrained": "s.pth"}
    )
    recipe = config.recipe("lgce_swin_base", 0)
    assert recipe.epochs == 5 and recipe.input_size == 480 and recipe.precision == "bf16-mixed"
    assert recipe.model_kwargs["pretrained"] == "s.pth"
    with pytest.raises(RRSISError, match="--reference"):
        BenchmarkConfig(data=tmp_path, out=tmp_path, models=("a",), reference="b")
    with pytest.raises(RRSISError, match="unknown budget"):
        BenchmarkConfig(data=tmp_path, out=tmp_path, budget="huge")


def test_benchmark_with_checkpoints(tiny_weights: Path, tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = [
        "benchmark", "--models", "a,b", "--data", str(tree), "--out", str(out),
        "--checkpoints", f"a={tiny_weights},b={tiny_weights}", "--device", "cpu", "--no-progress",
        "--resamples", "200",
    ]  # fmt: skip
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["model"] for r in rows] == ["a", "b"]
    # Same weights, same data: identical rows, and a paired difference of exactly 0.
    assert {k: v for k, v in rows[0].items() if k != "model"} == {
        k: v for k, v in rows[1].items() if k != "model"
    }
    paired = list(csv.DictReader((out / "paired.csv").open()))
    assert {p["subset"] for p in paired} >= {"all", "large", "single"}
    overall = next(p for p in paired if p["subset"] == "all")
    assert (overall["model"], overall["reference"]) == ("b", "a")
    assert float(overall["delta"]) == float(overall["low"]) == float(overall["high"]) == 0.0
    table = (out / "table.md").read_text()
    assert "network alone (no composition rules)" in table and "test split" in table
    assert (out / "size_scatter.png").read_bytes()[:4] == b"\x89PNG"
    command = (out / "command.txt").read_text()
    assert command.startswith("rrsis benchmark --models a,b") and "wall time" in command
    result = json.loads((out / "results" / "a" / "checkpoint.json").read_text())
    assert result["split"] == "test" and result["composed"] is None


def test_benchmark_argument_errors(tree: Path, tiny_weights: Path, tmp_path, capsys) -> None:
    base = ["benchmark", "--data", str(tree), "--out", str(tmp_path / "b"), "--no-progress"]
    assert main([*base, "--models", "a,a"]) == 2
    assert "twice" in capsys.readouterr().err
    assert main([*base, "--models", "not_a_model"]) == 2
    assert "cannot train unknown model" in capsys.readouterr().err
    assert main([*base, "--models", "a", "--checkpoints", f"c={tiny_weights}"]) == 2
    assert "not in --models" in capsys.readouterr().err
    assert main([*base, "--models", "a", "--checkpoints", "a"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main([*base]) == 2
    assert "needs --models" in capsys.readouterr().err


def _mtimes(out: Path) -> dict[str, int]:
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns
        for p in sorted((out / "runs").glob("*/*/model.safetensors"))
    }


def test_two_models_two_seeds_end_to_end_and_resume(tree: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    argv = [
        "benchmark", "--models", ",".join(MODELS), "--seeds", "0,1", "--data", str(tree),
        "--out", str(out), "--epochs", "1", "--batch-size", "2", "--max-steps", "1", "--tiny",
        "--device", "cpu", "--no-progress", "--resamples", "200",
    ]  # fmt: skip
    assert main(argv) == 0
    runs = _mtimes(out)
    assert sorted(runs) == [f"runs/{m}/seed-{s}/model.safetensors" for m in MODELS for s in (0, 1)]
    for model in MODELS:
        for seed in (0, 1):
            hparams = json.loads(
                (out / "runs" / model / f"seed-{seed}" / "hparams.json").read_text()
            )
            assert hparams["train"]["seed"] == seed
            result = json.loads((out / "results" / model / f"seed-{seed}.json").read_text())
            # Scored at the size it was trained at, network alone.
            assert result["input_size"] == hparams["train"]["input_size"]
            assert result["composed"] is None and result["n"] == 4 and result["seed"] == seed
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["model"] for r in rows] == list(MODELS) and {r["runs"] for r in rows} == {"2"}
    assert "mIoU sd" in rows[0] and "scattered mIoU" in rows[0]
    paired = list(csv.DictReader((out / "paired.csv").open()))
    assert {p["model"] for p in paired} == {MODELS[1]}
    assert {p["runs"] for p in paired} == {"2 vs 2"}
    summary = json.loads((out / "benchmark.json").read_text())
    assert summary["config"]["scores"] == "network alone" and summary["reference"] == MODELS[0]
    capsys.readouterr()

    # A rerun reuses every finished run and evaluation.
    assert main(argv) == 0
    assert _mtimes(out) == runs
    # An interrupted run (its checkpoint kept, no exported model) continues; the others stay.
    lost = out / "runs" / MODELS[1] / "seed-1"
    (lost / "model.safetensors").unlink()
    assert (lost / "checkpoints" / "last.ckpt").is_file()
    assert main(argv) == 0
    after = _mtimes(out)
    assert (lost / "model.safetensors").is_file()
    assert {k: v for k, v in after.items() if "seed-1" not in k or MODELS[1] not in k} == {
        k: v for k, v in runs.items() if "seed-1" not in k or MODELS[1] not in k
    }
    capsys.readouterr()
    # The same folder with another recipe is refused before any training.
    assert main([*argv[:-2], "--epochs", "2", "--resamples", "200"]) == 2
    assert "another recipe (epochs differ)" in capsys.readouterr().err


def test_cli_adds_a_family_to_the_budgets_models(tmp_path: Path) -> None:
    from rrsis.cli import build_parser
    from rrsis.cli.benchmark import build_config

    argv = ["benchmark", "--budget", "cpu", "--add-models", "lavt_effnet2_minilm"]
    argv += ["--seeds", "0-1", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    argv += ["--model-arg", "pretrained=false,text_pretrained=/w/bert"]
    config = build_config(build_parser().parse_args(argv))
    assert config.models == (*BUDGETS["cpu"].models, "lavt_effnet2_minilm")
    assert config.seeds == (0, 1) and config.preset == "default"
    assert config.model_kwargs == {"pretrained": False, "text_pretrained": "/w/bert"}
    assert config.command.startswith("rrsis benchmark --add-models lavt_effnet2_minilm")
