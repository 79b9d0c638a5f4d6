"""`rrsis evaluate` and `rrsis benchmark` end to end on tiny models and the oracle tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from rrsis.cli import main
from rrsis.eval.calibrate import THRESHOLD_GRID, best_threshold, sweep_thresholds
from rrsis.eval.evaluate import open_dataset
from rrsis.models import io as model_io
from rrsis.models import registry

TINY = "lgce_swin_base"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    model_io.save_model(registry.get_tiny_model(TINY), path)
    return path


def test_evaluate_end_to_end(tiny_weights: Path, oracle_tree: Path, tmp_path: Path, capsys) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "res" / "results.json"
    pred_dir = tmp_path / "pred"
    argv = [
        "evaluate", "--model", str(tiny_weights), "--data", str(oracle_tree), "--split", "test",
        "--out", str(out), "--save-predictions", str(pred_dir), "--batch-size", "3",
        "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| overall | 4 |" in printed
    assert "size: large" in printed and "kind: attribute" in printed
    result = json.loads(out.read_text())
    assert result["n"] == 4 and result["split"] == "test" and result["untrained"] is False
    assert result["model"]["name"] == TINY
    assert set(result["overall"]) >= {"oIoU", "mIoU", "Pr@0.5", "Pr@0.9", "n"}
    low, high = result["interval"]["mIoU"]
    assert low <= result["overall"]["mIoU"] <= high and result["interval"]["resamples"] == 2000
    assert "95 % interval, network (bootstrap over" in printed
    assert all(sample["image"] for sample in result["samples"])
    # One run, one table: the network alone and what `rrsis predict` gives (all rules).
    composed = result["composed"]
    assert composed["rules"] == ["attribute", "position", "relation"]
    assert sum(composed["decided_by"].values()) == 4 == len(composed["samples"])
    assert "| subset | n | mIoU network | mIoU composed | oIoU network |" in printed
    assert "by rules" in printed and "\nnetwork: the network reads each whole expression" in printed
    assert "95 % interval, composed (bootstrap over" in printed
    assert out.with_suffix(".md").read_text().startswith("Results (protocol `native`")
    assert len(list(pred_dir.glob("*.png"))) == 4
    assert len(list((pred_dir / "composed").glob("*.png"))) == 4
    # Outputs exist now: refused with one line and exit code 2, fine with --overwrite.
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rrsis: error:") and "--overwrite" in err and len(err.splitlines()) == 1
    assert main([*argv, "--overwrite", "--protocol", "lavt", "--resamples", "0"]) == 0
    lavt = json.loads(out.read_text())
    assert lavt["protocol"] == "lavt" and lavt["interval"] is None
    # The network alone (what compares with published tables) is there whatever --compose says.
    assert lavt["overall"]["n"] == 4 and lavt["composed"]["interval"] is None
    assert main([*argv, "--overwrite", "--resamples", "0", "--compose", "position"]) == 0
    assert json.loads(out.read_text())["composed"]["rules"] == ["position"]
    capsys.readouterr()
    assert main([*argv, "--overwrite", "--resamples", "0", "--compose", "none"]) == 0
    assert json.loads(out.read_text())["composed"] is None
    printed = capsys.readouterr().out
    assert "| subset | n | mIoU | oIoU | Pr@0.5 |" in printed and "composed" not in printed
    with pytest.raises(SystemExit) as exit_info:  # argparse: too few resamples
        main([*argv, "--overwrite", "--resamples", "50"])
    assert exit_info.value.code == 2
    assert "at least 100, got 50" in capsys.readouterr().err


def test_evaluate_user_errors(tiny_weights: Path, oracle_tree: Path, capsys) -> None:
    base = ["evaluate", "--data", str(oracle_tree), "--no-progress"]
    assert main([*base, "--model", "no/such/model.safetensors"]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert main([*base, "--model", "not_a_model"]) == 2
    assert "neither a model file nor a registered model" in capsys.readouterr().err
    assert main([*base, "--model", str(tiny_weights), "--split", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main([*base, "--model", str(tiny_weights), "--compose", "colour"]) == 2
    err = capsys.readouterr().err
    assert "unknown composition rule(s) colour" in err and len(err.strip().splitlines()) == 1


def test_bare_registry_name_warns_untrained(
    oracle_tree: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # The full-size model is not needed to check the warning: build the tiny one instead.
    tiny = registry.get_tiny_model(TINY)
    monkeypatch.setattr(registry, "get_model", lambda name, **kw: tiny)
    assert main(["evaluate", "--model", TINY, "--data", str(oracle_tree), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "untrained" in captured.err
    assert "| overall | 4 |" in captured.out


def test_evaluate_uses_recorded_training_size(
    tiny_weights: Path, oracle_tree: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    weights = run / "model.safetensors"
    weights.write_bytes(tiny_weights.read_bytes())
    out = tmp_path / "r.json"
    base = ["evaluate", "--model", str(weights), "--data", str(oracle_tree), "--no-progress"]
    assert main([*base, "--out", str(out)]) == 0
    default_size = json.loads(out.read_text())["input_size"]
    (run / "hparams.json").write_text(json.dumps({"train": {"input_size": 96}}))
    assert main([*base, "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["input_size"] == 96 != default_size
    # An explicit --input-size wins over the record.
    assert main([*base, "--out", str(out), "--overwrite", "--input-size", "64"]) == 0
    assert json.loads(out.read_text())["input_size"] == 64


@pytest.mark.parametrize("name", ["refsegrs", "rrsisd"])
def test_evaluate_fixture_trees(
    tiny_weights: Path, tmp_path: Path, name: str, request: pytest.FixtureRequest
) -> None:
    # The data helpers' committed fixture trees: format detected, non-square masks scored as
    # they are.
    root = request.getfixturevalue(f"{name}_root")
    dataset = open_dataset(root, "test")
    out = tmp_path / "r.json"
    preds = tmp_path / "pred"
    argv = ["evaluate", "--model", str(tiny_weights), "--data", str(root), "--out", str(out)]
    assert main([*argv, "--save-predictions", str(preds), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == len(dataset)
    sample = dataset[0]
    png = preds / f"{sample['id']}.png"
    assert Image.open(png).size == sample["mask"].shape[::-1]
    # Every sample has a kind (from meta or inferred from the text), never "unknown".
    assert "unknown" not in result["breakdown"]["kind"]


def test_calibrate_chooses_and_stores_the_best_val_threshold(
    tiny_weights: Path, oracle_tree: Path, tmp_path: Path, capsys
) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "calibrated.safetensors"
    argv = ["calibrate", "--model", str(tiny_weights), "--data", str(oracle_tree)]
    assert main([*argv, "--write", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    model = model_io.load_model(tiny_weights)
    sweep = sweep_thresholds(model, open_dataset(oracle_tree, "val"), THRESHOLD_GRID)
    best = best_threshold(sweep)
    assert f"best threshold: {best} " in printed
    assert (
        printed.count("| best") == 1
        and len([ln for ln in printed.splitlines() if ln.startswith("| 0.")]) == 19
    )
    calibrated = model_io.load_model(out)
    assert calibrated.recommended_threshold == best
    for key, value in model.state_dict().items():
        assert torch.equal(value, calibrated.state_dict()[key]), key
    # The written copy is marked as stored, and it is not replaced without --overwrite.
    assert (
        main(["calibrate", "--model", str(out), "--data", str(oracle_tree), "--no-progress"]) == 0
    )
    assert "best, stored" in capsys.readouterr().out
    assert main([*argv, "--write", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--split", "test"], "never on test"),
        (["--write", "{weights}"], "is the input model"),
        (["--write", "x.pt"], ".safetensors"),
    ],
)
def test_calibrate_refusals_are_one_line(
    tiny_weights: Path, oracle_tree: Path, capsys, extra: list[str], message: str
) -> None:
    before = tiny_weights.read_bytes()
    extra = [e.replace("{weights}", str(tiny_weights)) for e in extra]
    argv = ["calibrate", "--model", str(tiny_weights), "--data", str(oracle_tree), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert tiny_weights.read_bytes() == before


def test_best_threshold_ties_go_to_the_one_nearest_half() -> None:
    sweep = {
        0.2: {"mIoU": 40.004},
        0.45: {"mIoU": 40.0},
        0.7: {"mIoU": 39.0},
        0.55: {"mIoU": 40.001},
    }
    assert best_threshold(sweep) == 0.45
    sweep[0.2]["mIoU"] = 40.006  # 40.01 at two decimals: a real gain
    assert best_threshold(sweep) == 0.2


def test_model_default_is_the_shipped_model(
    tiny_weights: Path, oracle_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # `--model` defaults to the shipped model (here a tiny stand-in), for evaluate and calibrate.
    shipped = tmp_path / "shipped" / "default.safetensors"
    shipped.parent.mkdir()
    shipped.write_bytes(tiny_weights.read_bytes())
    monkeypatch.setattr(model_io, "default_weights_path", lambda: shipped)
    out = tmp_path / "r.json"
    argv = ["evaluate", "--data", str(oracle_tree), "--no-progress", "--resamples", "0"]
    assert main([*argv, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model_spec"] == "default" and result["untrained"] is False
    assert result["model"]["name"] == TINY
    # The input size recorded beside the shipped weights is the one scored at.
    shipped.with_suffix(".json").write_text(json.dumps({"train": {"input_size": 96}}))
    assert main([*argv, "--model", "default", "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["input_size"] == 96
    capsys.readouterr()
    assert main(["calibrate", "--data", str(oracle_tree), "--no-progress"]) == 0
    assert f"{shipped} on {oracle_tree} (val, n=2, network alone):" in capsys.readouterr().out
