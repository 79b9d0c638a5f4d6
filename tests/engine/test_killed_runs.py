"""A run killed while it writes a checkpoint or its export leaves only recognisable temporary
files next to their targets (none in the system temporary folder), and the next run into the
folder (a resume) removes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import TinyNet, make_tree  # noqa: E402

from rrsis.data.files import is_temp  # noqa: E402
from rrsis.engine.config import TrainRun  # noqa: E402
from rrsis.engine.train import train  # noqa: E402

HERE = Path(__file__).resolve().parent

# Trains TinyNet for 2 epochs of 2 steps, a checkpoint every step, and kills itself (SIGKILL,
# nothing runs after it) half-way through writing the second checkpoint or the export.
SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import rrsis.engine.runfiles as runfiles
import rrsis.models.io as io
from test_train import TinyNet, make_run

what, tree, out = sys.argv[1:]
saves = []

def half_then_kill(write):
    def patched(obj, target, *args, **kwargs):
        saves.append(target)
        write(obj, target, *args, **kwargs)
        if what == "checkpoint" and len(saves) < 2:
            return
        data = open(target, "rb").read()
        open(target, "wb").write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return patched

if what == "checkpoint":
    runfiles.torch.save = half_then_kill(torch.save)
else:
    io.save_file = half_then_kill(io.save_file)
from rrsis.engine.train import train
options = dict(batch_size=4, workers=0, input_size=32, epochs=2, ckpt_every_n_steps=1,
               progress=False)
train(make_run([tree], out, **options), model=TinyNet())
"""


@pytest.mark.parametrize("what", ["checkpoint", "export"])
def test_killed_write_leaves_recognisable_litter_that_the_resume_removes(tmp_path: Path, what: str):
    torch.set_num_threads(1)
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "run"
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    script = tmp_path / "killed.py"
    script.write_text(SCRIPT.format(tests=str(HERE)))
    env = dict(os.environ, TMPDIR=str(system_tmp))
    done = subprocess.run(
        [sys.executable, str(script), what, str(tree), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    litter = [p for p in out.rglob("*") if is_temp(p)]
    assert len(litter) == 1, sorted(out.rglob("*"))
    folder = out / ("checkpoints" if what == "checkpoint" else "")
    assert litter[0].parent == folder
    assert litter[0].name.startswith(".last.ckpt." if what == "checkpoint" else ".model.")
    assert not list(system_tmp.iterdir())
    assert not [p for p in out.rglob(".tmp*")]  # safetensors' own temporaries stay inside ours
    # The checkpoint before the kill is whole, and the resume starts from it and cleans up.
    train(TrainRun(out=out, resume=True, progress=False), model=TinyNet())
    assert not [p for p in out.rglob("*") if is_temp(p)]
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 4
    assert (out / "model.safetensors").is_file()
