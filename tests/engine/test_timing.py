"""Training-time measurements: bare steps, StepTimer, benchmarks/bench_train_step.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rrsis.engine.presets import get_preset
from rrsis.engine.timing import StepTimer, time_bare_steps

from .test_train import make_tree


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_time_bare_steps_trains_and_times_each_step():
    config = get_preset("default")
    config.batch_size, config.input_size = 2, 64
    times = time_bare_steps(config.model_name, config, "cpu", warmup=1, timed=3, tiny=True)
    assert len(times) == 3 and all(t > 0 for t in times)


def test_time_bare_steps_with_the_recipe_losses_runs_the_auxiliary_head():
    from rrsis.engine.auxiliary import SemanticAuxHead

    config = get_preset("default")
    config.batch_size, config.input_size = 2, 64
    config.semantic_weight, config.semantic_classes = 0.5, 3
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: (
            calls.append(out.shape) if isinstance(module, SemanticAuxHead) else None
        )
    )
    try:
        times = time_bare_steps(
            config.model_name, config, "cpu", warmup=1, timed=2, tiny=True, recipe_losses=True
        )
        plain = time_bare_steps(config.model_name, config, "cpu", warmup=0, timed=1, tiny=True)
    finally:
        handle.remove()
    assert len(times) == 2 and len(plain) == 1
    assert len(calls) == 3 and all(shape[:2] == (2, 3) for shape in calls)  # not in the plain step


def test_step_timer_splits_wait_and_step(monkeypatch: pytest.MonkeyPatch):
    clock = iter([0.0, 1.0, 1.5, 3.5, 4.0, 7.0])  # start, end, start, end, start, end
    monkeypatch.setattr("rrsis.engine.timing.time.perf_counter", lambda: next(clock))
    module = torch.nn.Linear(1, 1)
    module.device = torch.device("cpu")
    timer = StepTimer(skip=1)
    for _ in range(3):
        timer.on_train_batch_start(None, module, None, 0)
        timer.on_train_batch_end(None, module, None, None, 0)
    # Step 0 is skipped; steps 1 and 2 took 2 s and 3 s after waits of 0.5 s each.
    assert timer.step == [2.0, 3.0] and timer.wait == [0.5, 0.5]
    summary = timer.summary()
    assert summary["step_ms_median"] == 2500.0 and summary["wait_ms_median"] == 500.0
    assert summary["steps_per_s"] == pytest.approx(1 / 3.0, abs=0.01)
    assert StepTimer().summary() == {"steps_timed": 0}


def test_bench_train_step_script(tmp_path: Path, capsys, repo_script):
    tree = make_tree(tmp_path / "tree")
    bench = repo_script("benchmarks/bench_train_step.py")
    argv = ["--tiny", "--data", str(tree), "--val-data", str(tree), "--steps", "3", "--skip", "1"]
    argv += ["--bare-steps", "2", "--workers", "0", "--semantic-weight", "0", "--batch-size", "4"]
    argv += ["--progress"]  # the bar goes to stderr: stdout stays one JSON object
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["real"]["steps_timed"] == 3 and result["bare"]["steps_timed"] == 2
    assert result["bare_recipe"]["steps_timed"] == 2 and len(result["real"]["step_ms_all"]) == 3
    assert result["real"]["step_ms_median"] > 0 and result["real_over_bare"] > 0
    assert result["deterministic"] is True and result["semantic_weight"] == 0
    assert result["progress"] is True
