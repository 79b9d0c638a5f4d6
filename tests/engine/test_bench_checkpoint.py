"""benchmarks/bench_checkpoint.py on a tiny model: both writers write the same whole state."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def bench(repo_script):
    return repo_script("benchmarks/bench_checkpoint.py")


def test_training_state_holds_weights_and_adamw_moments(bench):
    state, frozen = bench.training_state("lgce_effnet_minilm", tiny=True, device="cpu")
    moments = state["optimizer_states"][0]["state"]
    trainable = [p for p in state["state_dict"].values() if p.is_floating_point()]
    assert moments and all({"exp_avg", "exp_avg_sq"} <= set(m) for m in moments.values())
    # The recipe freezes the text encoder: its weights are saved, without moments.
    assert len(trainable) > len(moments) and frozen > 0


def test_bench_checkpoint_script(bench, tmp_path, capsys):
    argv = ["--tiny", "--model", "lgce_effnet_minilm", "--repeats", "2", "--out-dir", str(tmp_path)]
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["checkpoint_bytes"] > result["frozen_weight_bytes"] > 0 and result["tensors"] > 0
    for writer in ("sync", "async"):
        blocked, written = result[writer]["blocked_s"]["all"], result[writer]["written_s"]["all"]
        assert len(blocked) == 2 and all(0 < b <= w for b, w in zip(blocked, written))
    assert list(tmp_path.iterdir()) == []  # the files are removed after timing
