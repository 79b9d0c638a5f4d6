"""scripts/select_on_val.py: val-only selection with paired comparisons against the first run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

from .test_train import make_tree, tiny_run

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "select_on_val.py"


def _load():
    spec = importlib.util.spec_from_file_location("select_on_val", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_select_on_val_compares_each_run_with_the_first(tmp_path: Path, capsys):
    torch.set_num_threads(1)
    tree = make_tree(tmp_path / "tree")
    runs = []
    for name, epochs in (("ref", 1), ("longer", 3)):
        torch.manual_seed(0)
        runs.append(tiny_run(tree, tmp_path / "runs" / name, epochs))
    (tmp_path / "runs" / "empty").mkdir()
    select = _load()
    out, evals = tmp_path / "sel.json", tmp_path / "evals"
    argv = [*map(str, runs), str(tmp_path / "runs" / "empty"), "--val-root", str(tree)]
    assert (
        select.main([*argv, "--out", str(out), "--save-evals", str(evals), "--threads", "1"]) == 0
    )
    summary = json.loads(out.read_text())
    assert summary["selected"] in ("ref", "longer") and "empty" not in summary
    assert "vs_reference" not in summary["ref"]
    versus = summary["longer"]["vs_reference"]
    assert versus["reference"] == "ref"
    low, high = versus["interval"]
    assert low <= versus["delta"] <= high
    # The paired delta is the difference of the two runs' scores at their own thresholds.
    assert versus["delta"] == round(versus["b"] - versus["a"], 2)
    assert abs(versus["b"] - summary["longer"]["val_mIoU"]) < 0.01
    assert abs(versus["a"] - summary["ref"]["val_mIoU"]) < 0.01
    # The saved evaluations are what `rrsis compare` reads.
    saved = json.loads((evals / "longer.json").read_text())
    assert saved["split"] == "val" and len(saved["samples"]) == 4
    assert "paired 95 % interval" in capsys.readouterr().out
    sys.modules.pop("train_default", None)
