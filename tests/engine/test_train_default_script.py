"""scripts/train_default.py runs end to end in --smoke mode (tiny model, synthetic data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_default.py"


def test_train_default_smoke(tmp_path: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--root", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = tmp_path / "src/rrsis/weights/default.safetensors"
    hparams = json.loads((tmp_path / "src/rrsis/weights/default.json").read_text())
    assert weights.stat().st_size > 0
    assert hparams["train"]["model_name"] == "lgce_effnet_minilm" and hparams["global_step"] == 2
    # The recorded data paths name the repository's folders, not the training machine's.
    assert hparams["data_roots"] == ["data/synth"] and hparams["val_root"] == "data/synth"
    result = json.loads((tmp_path / "docs/results/default-model/export.json").read_text())
    assert result["dataset"].endswith(":test") and result["overall"]["n"] > 0

    from rrsis.models.io import load_model

    model = load_model(weights)
    assert model.input_size == hparams["train"]["input_size"] == 64


def test_train_default_other_model(tmp_path: Path):
    """--model trains another registry model with the default recipe (e.g. LAVT without LGCE)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run_dir = tmp_path / "runs" / "lavt"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--root", str(tmp_path), "--train-only"]
    cmd += ["--model", "lavt_effnet_minilm", "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hparams = json.loads((run_dir / "hparams.json").read_text())
    assert hparams["train"]["model_name"] == "lavt_effnet_minilm"
    assert hparams["train"]["model_kwargs"] == {"coord_features": True}  # no LGCE scale
    assert hparams["model_config"]["name"] == "lavt_effnet_minilm"
    assert not (tmp_path / "src/rrsis/weights/default.safetensors").exists()  # nothing shipped


def test_train_default_final_fit(tmp_path: Path):
    """--final-fit trains without validation, exports the last checkpoint and ships the given
    threshold (the val tile is training data then, so nothing may be chosen on it)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--root", str(tmp_path)]
    cmd += ["--final-fit", "--threshold", "0.3"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hparams = json.loads((tmp_path / "src/rrsis/weights/default.json").read_text())
    assert hparams["best_checkpoint"] == "last.ckpt" and hparams["global_step"] == 2
    assert hparams["best_val_mIoU"] is None  # validation never ran
    assert hparams["threshold"]["value"] == 0.3 and "val_by_threshold" not in hparams["threshold"]
    assert hparams["final_fit"]["checkpoint"].startswith("last")
    # The run keeps its training time, which a later --export-only reports.
    run_record = json.loads((tmp_path / "runs/default/hparams.json").read_text())
    assert run_record["train_seconds"] >= 0
    assert hparams["wall_seconds"] >= run_record["train_seconds"]

    from rrsis.models.io import default_threshold, load_model

    assert default_threshold(load_model(tmp_path / "src/rrsis/weights/default.safetensors")) == 0.3


def test_train_default_final_fit_needs_a_threshold(tmp_path: Path):
    cmd = [sys.executable, str(SCRIPT), "--final-fit", "--root", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--final-fit needs --threshold" in proc.stderr
    assert not (tmp_path / "data").exists()  # refused before building anything
