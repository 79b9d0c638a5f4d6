"""scripts/soup.py: weight averaging of runs, uniform and greedy (with an injected score)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from rrsis.models.io import save_model
from rrsis.models.registry import get_tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import soup  # noqa: E402


def _models(n: int) -> list[torch.nn.Module]:
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(get_tiny_model("lgce_effnet_minilm").eval())
    return models


def test_uniform_soup_is_the_mean_and_leaves_ingredients_alone():
    models = _models(3)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    made, record = soup.make_soup(models, lambda m: 0.0, "uniform", log=lambda _: None)
    assert record["chosen"] == [0, 1, 2]
    for key, value in made.state_dict().items():
        if value.is_floating_point():
            expected = sum(b[key] for b in before) / 3
            torch.testing.assert_close(value, expected, msg=key)
        else:
            assert torch.equal(value, before[0][key]), key
    for model, state in zip(models, before):
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_greedy_soup_keeps_only_ingredients_that_raise_the_score():
    models = _models(3)
    # A score that prefers weights near model 2's and never rewards averaging in model 0.
    target = {k: v.clone() for k, v in models[2].state_dict().items()}
    probe = next(k for k, v in target.items() if v.is_floating_point() and v.numel() > 10)

    def score(model: torch.nn.Module) -> float:
        return -float((model.state_dict()[probe] - target[probe]).abs().mean())

    made, record = soup.make_soup(models, score, "greedy", log=lambda _: None)
    assert record["chosen"] == [2]  # any average moves away from model 2: both dropped
    assert [step["kept"] for step in record["steps"]] == [True, False, False]
    torch.testing.assert_close(made.state_dict()[probe], target[probe])


def test_average_refuses_different_architectures():
    small = get_tiny_model("lgce_effnet_minilm").state_dict()
    with pytest.raises(ValueError, match="not one architecture"):
        soup.average([small, {k: v for k, v in list(small.items())[1:]}])


def test_checkpoint_ingredient_takes_the_runs_architecture(tmp_path: Path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    first, second = _models(2)
    save_model(first, run / "model.safetensors")
    state = {"state_dict": {"model." + k: v for k, v in second.state_dict().items()}}
    torch.save(state, run / "checkpoints" / "last.ckpt")
    loaded = soup.load_ingredient(run / "checkpoints" / "last.ckpt")
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, second.state_dict()[key], msg=key)
    assert soup.run_dir_of(run / "checkpoints" / "last.ckpt") == run
