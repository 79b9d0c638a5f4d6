"""Distributed training: 2 CPU processes (gloo) through Lightning's DDP strategy.

Lightning's ``ddp`` strategy re-launches the running script for rank 1, so the run happens in
a small generated script executed in a subprocess rather than inside pytest itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# The generated script imports the tiny model from test_train.py, and so does this module.
sys.path.insert(0, str(HERE))
from test_train import make_tree  # noqa: E402


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {here!r})
from test_train import TinyNet
from rrsis.engine.config import TrainRun
from rrsis.engine.presets import resolve_recipe
from rrsis.engine.train import train
torch.set_num_threads(1)
recipe = resolve_recipe("paper", epochs=1, batch_size=2, lr=0.05, workers=0, input_size=32)
run = TrainRun([{tree!r}], {out!r}, recipe, preset="paper", devices=2, accelerator="cpu",
               strategy="ddp", progress=False)
train(run, model=TinyNet())
"""


def test_ddp_two_cpu_processes(tree: Path, tmp_path: Path):
    script = tmp_path / "ddp_train.py"
    out = tmp_path / "ddp"
    script.write_text(
        textwrap.dedent(DDP_SCRIPT.format(here=str(HERE), tree=str(tree), out=str(out)))
    )
    env = dict(os.environ, PL_DISABLE_FORK="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "hparams.json").read_text())
    # 8 samples over 2 ranks with batch 2 = 2 steps per rank per epoch.
    assert record["global_step"] == 2
    assert (out / "model.safetensors").is_file()
    assert record["best_val_mIoU"] is not None
