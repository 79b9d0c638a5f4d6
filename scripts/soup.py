#!/usr/bin/env python
"""Average the weights of several training runs of one architecture (a "model soup").

Runs of ``train_default.py`` start from the same weights (ImageNet EfficientNet, the frozen MiniLM
and, with the same seed, the same initialisation of every new layer), so their fine-tuned weights
tend to stay close enough for their average to be a model of its own, often better than each
(Wortsman et al., "Model soups", ICML 2022). The average costs nothing at inference, unlike an
ensemble of predictions.

Ingredients are ``model.safetensors`` files, run directories (their ``model.safetensors``) or
Lightning checkpoints ``RUN/checkpoints/*.ckpt`` (read with ``weights_only=True``; the
architecture comes from ``RUN/model.safetensors``). Every ingredient and soup is scored on the
Dubai **val** tile the way the shipped model is chosen (mIoU at its own val-chosen threshold,
``train_default.choose_threshold``); the test split is never opened.

- ``--recipe greedy`` (default): ingredients sorted by val score; each is added to the soup only
  if the soup's val score rises.
- ``--recipe uniform``: the plain average of all ingredients.

The soup is written as ``OUT/model.safetensors`` with the first ingredient's ``hparams.json``
(plus a ``soup`` entry), so ``select_on_val.py OUT`` and ``train_default.py --export-only
--run-dir OUT`` take it like any run. The greedy choice is made on val, so the soup's val score
is optimistic: compare it with other runs on that understanding.

Usage::

    python scripts/soup.py runs/default_v4 runs/default_v7 runs/gpu6/b8 --out runs/soup
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from rrsis.engine.train import load_checkpoint_weights  # noqa: E402
from rrsis.errors import ModelError  # noqa: E402
from rrsis.models.io import load_model, save_model  # noqa: E402


def run_dir_of(path: Path) -> Path:
    """The run directory an ingredient belongs to."""
    if path.is_dir():
        return path
    if path.suffix == ".ckpt" and path.parent.name == "checkpoints":
        return path.parent.parent
    return path.parent


def load_ingredient(path: Path) -> torch.nn.Module:
    """A model from a ``.safetensors`` file, a run directory or a run's Lightning checkpoint."""
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix != ".ckpt":
        return load_model(path)
    like = run_dir_of(path) / "model.safetensors"
    if not like.is_file():
        raise ModelError(f"{path}: needs {like} for the architecture")
    return load_checkpoint_weights(path, load_model(like)).eval()


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point entries; other entries (counters) from the first."""
    keys = list(states[0])
    for state in states[1:]:
        if list(state) != keys:
            raise ValueError("ingredients have different parameters: not one architecture")
    out = {}
    for key in keys:
        first = states[0][key]
        if first.is_floating_point():
            out[key] = torch.stack([s[key].double() for s in states]).mean(0).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def make_soup(
    models: list[torch.nn.Module],
    score: Callable[[torch.nn.Module], float],
    recipe: str = "greedy",
    log: Callable[[str], None] = print,
) -> tuple[torch.nn.Module, dict]:
    """Average ``models`` (uniformly, or greedily by ``score``); returns the soup and a record.

    The returned model is a deep copy; the ingredients are left unchanged.
    """
    import copy

    states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]
    scores = [score(m) for m in models]
    for i, value in enumerate(scores):
        log(f"ingredient {i}: val {value:.2f}")
    soup = copy.deepcopy(models[0])
    if recipe == "uniform":
        chosen = list(range(len(models)))
        soup.load_state_dict(average(states))
        best = score(soup)
        steps = [{"soup": chosen, "val": best, "kept": True}]
    elif recipe == "greedy":
        order = sorted(range(len(models)), key=lambda i: -scores[i])
        chosen = [order[0]]
        soup.load_state_dict(states[order[0]])
        best = scores[order[0]]
        steps = [{"soup": list(chosen), "val": best, "kept": True}]
        for i in order[1:]:
            trial = copy.deepcopy(soup)
            trial.load_state_dict(average([states[j] for j in [*chosen, i]]))
            value = score(trial)
            kept = value > best
            steps.append({"soup": [*chosen, i], "val": value, "kept": kept})
            log(f"soup {[*chosen, i]}: val {value:.2f} ({'kept' if kept else 'dropped'})")
            if kept:
                chosen.append(i)
                soup, best = trial, value
    else:
        raise ValueError(f"unknown recipe {recipe!r} (greedy or uniform)")
    return soup.eval(), {
        "recipe": recipe,
        "ingredient_val": scores,
        "chosen": chosen,
        "val": best,
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ingredients", nargs="+", type=Path, help="runs, .safetensors or .ckpt")
    parser.add_argument("--out", type=Path, required=True, help="output run directory")
    parser.add_argument("--recipe", choices=("greedy", "uniform"), default="greedy")
    parser.add_argument("--val-root", type=Path, default=REPO / "data" / "dubai")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from train_default import choose_threshold

    torch.set_num_threads(args.threads)
    first_run = run_dir_of(args.ingredients[0])
    hparams = json.loads((first_run / "hparams.json").read_text())
    input_size = hparams["train"]["input_size"]

    def score(model: torch.nn.Module) -> float:
        threshold, sweep = choose_threshold(model, args.val_root, input_size, "cpu")
        return round(sweep[threshold]["mIoU"], 2)

    started = time.time()
    models = [load_ingredient(p) for p in args.ingredients]
    soup, record = make_soup(models, score, args.recipe)
    record["ingredients"] = [str(p) for p in args.ingredients]
    args.out.mkdir(parents=True, exist_ok=True)
    save_model(soup, args.out / "model.safetensors")
    hparams["soup"] = record
    (args.out / "hparams.json").write_text(json.dumps(hparams, indent=2))
    print(
        f"soup of {[str(args.ingredients[i]) for i in record['chosen']]}: val mIoU {record['val']:.2f}"
        f" -> {args.out} ({time.time() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
