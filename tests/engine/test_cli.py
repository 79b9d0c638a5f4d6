"""``rrsis train`` through the real CLI with a tiny registered model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from rrsis.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import make_tree  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train_argv(data: Path, out: Path) -> list[str]:
    """``rrsis train`` of the tiny registered CPU model, without a progress bar."""
    model = ["--model", "lgce_effnet_minilm", "--tiny"]
    return ["train", *model, "--data", str(data), "--out", str(out), "--no-progress"]


def test_cli_trains_registered_tiny_model_and_export_matches(tmp_path: Path, capsys):
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "run"
    argv = _train_argv(tree, out)
    argv += ["--epochs", "1", "--batch-size", "4", "--input-size", "64", "--workers", "0"]
    argv += ["--preset", "paper", "--seed", "1", "--photometric", "0.2", "--balance", "0.5"]
    argv += ["--preload", "--max-time", "01:00:00", "--fit-to-time"]
    assert main(argv) == 0
    assert "best checkpoint" in capsys.readouterr().out
    record = json.loads((out / "hparams.json").read_text())
    assert record["train"]["input_size"] == 64 and record["train"]["seed"] == 1
    assert record["train"]["photometric"] == 0.2 and record["train"]["balance"] == 0.5
    assert record["train"]["preload"] is True
    assert record["trainer"]["fit_to_time"] is True and record["trainer"]["max_time"] == "01:00:00"
    assert record["fit_to_time_events"] == []  # one planned epoch always fits an hour

    from rrsis.engine.train import build_model
    from rrsis.models.io import load_model

    exported = load_model(out / "model.safetensors").eval()
    assert exported.input_size == 64
    # The export carries the content words of its training expressions (its vocabulary).
    from rrsis.data.known_words import content_words
    from rrsis.data.refsegrs import RefSegRS

    trained = {w for text in RefSegRS(tree, "train").expressions for w in content_words(text)}
    assert trained and set(exported.vocabulary) == trained
    ckpt = torch.load(out / "checkpoints" / record["best_checkpoint"], weights_only=True)
    reference = build_model("lgce_effnet_minilm", tiny=True)
    reference.load_state_dict(
        {k[6:]: v for k, v in ckpt["state_dict"].items() if k[:6] == "model."}
    )
    image = torch.randn(2, 3, 64, 64)
    ids, mask = reference.tokenize(["the red roof", "a road"])
    with torch.no_grad():
        torch.testing.assert_close(exported(image, ids, mask), reference.eval()(image, ids, mask))


def test_cli_reports_missing_data_in_one_line(tmp_path: Path, capsys):
    argv = _train_argv(tmp_path / "nope", tmp_path / "run")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("option", ["--photometric", "--balance"])
def test_cli_refuses_augmentation_strength_out_of_range_in_one_line(
    tmp_path: Path, capsys, option: str
):
    tree = make_tree(tmp_path / "tree")
    argv = _train_argv(tree, tmp_path / "run") + ["--workers", "0", option, "1.5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option[2:] in err[0] and "Traceback" not in err[0]


def test_cli_fit_to_time_without_budget_is_one_line(tmp_path: Path, capsys):
    tree = make_tree(tmp_path / "tree")
    argv = _train_argv(tree, tmp_path / "run") + ["--workers", "0", "--fit-to-time"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-time" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "run").exists()


def test_cli_fine_tunes_from_a_saved_model(tmp_path: Path, capsys):
    """--init starts from the file's weights and architecture, not the registry's init."""
    from rrsis.models.io import load_model, save_model
    from rrsis.models.registry import get_tiny_model

    tree = make_tree(tmp_path / "tree")
    torch.manual_seed(5)
    start = get_tiny_model("lgce_effnet_minilm", input_size=64)
    init = save_model(start, tmp_path / "start.safetensors", threshold=0.3)
    out = tmp_path / "run"
    argv = ["train", "--init", str(init), "--data", str(tree), "--out", str(out), "--no-progress"]
    argv += ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--preset", "paper"]
    argv += ["--max-steps", "1", "--lr", "1e-9"]
    assert main(argv) == 0
    record = json.loads((out / "hparams.json").read_text())
    assert record["init"] == str(init)
    assert record["train"]["model_name"] == "lgce_effnet_minilm"
    assert record["train"]["input_size"] == 64  # the file's, not the preset's 320
    tuned = load_model(out / "model.safetensors")
    assert not hasattr(tuned, "recommended_threshold")  # 0.3 was chosen for the old weights
    # One step at a negligible lr: the weights are the file's, not a fresh initialisation.
    torch.manual_seed(6)
    fresh = get_tiny_model("lgce_effnet_minilm", input_size=64)
    keys = [
        k
        for k, v in tuned.state_dict().items()
        if v.is_floating_point() and v.numel() > 1 and "running" not in k
    ]
    assert all(
        torch.allclose(tuned.state_dict()[k], start.state_dict()[k], atol=1e-5) for k in keys
    )
    # ... and they are not what a fresh initialisation gives (constants like norm scales aside).
    differ = [k for k in keys if not torch.allclose(start.state_dict()[k], fresh.state_dict()[k])]
    assert len(differ) > len(keys) // 2


def test_cli_init_with_another_model_name_is_one_line(tmp_path: Path, capsys):
    from rrsis.models.io import save_model
    from rrsis.models.registry import get_tiny_model

    tree = make_tree(tmp_path / "tree")
    init = save_model(get_tiny_model("lgce_effnet_minilm"), tmp_path / "start.safetensors")
    argv = ["train", "--init", str(init), "--model", "lavt_effnet_minilm", "--data", str(tree)]
    argv += ["--out", str(tmp_path / "run"), "--workers", "0", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lavt_effnet_minilm" in err[0] and "Traceback" not in err[0]


def test_lgce_starts_from_a_lavt_file_with_its_function(tmp_path: Path):
    """--init a LAVT file --model its LGCE: every LAVT weight kept, the neck new, same output."""
    from rrsis.errors import ModelError
    from rrsis.models.convert import lgce_from_lavt
    from rrsis.models.io import load_model, save_model
    from rrsis.models.registry import get_tiny_model

    torch.manual_seed(3)
    lavt = get_tiny_model("lavt_swin_base").eval()
    lgce = lgce_from_lavt(lavt, "lgce_swin_base").eval()
    assert lgce.config["name"] == "lgce_swin_base" and lgce.neck is not None
    image = torch.randn(2, 3, 64, 64)
    ids, mask = lavt.tokenize(["road", "building along the road"])
    with torch.no_grad():
        torch.testing.assert_close(lgce(image, ids, mask), lavt(image, ids, mask))
    with pytest.raises(ModelError, match="cannot start from"):
        lgce_from_lavt(lavt, "lgce_effnet_minilm")

    tree = make_tree(tmp_path / "tree")
    init = save_model(
        get_tiny_model("lavt_effnet_minilm", input_size=64), tmp_path / "lavt.safetensors"
    )
    out = tmp_path / "run"
    argv = ["train", "--init", str(init), "--model", "lgce_effnet_minilm", "--data", str(tree)]
    argv += ["--out", str(out), "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    argv += ["--max-steps", "1", "--no-progress"]
    assert main(argv) == 0
    record = json.loads((out / "hparams.json").read_text())
    assert record["train"]["model_name"] == "lgce_effnet_minilm" and record["init"] == str(init)
    assert load_model(out / "model.safetensors").config["name"] == "lgce_effnet_minilm"
