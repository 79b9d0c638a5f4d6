#!/usr/bin/env python
"""Probe test-time batch-norm adaptation (AdaBN, Li et al. 2016) on the Dubai VAL tile.

For each variant, the model's batch-norm statistics are re-estimated on all the crops of the
split (images and their expressions, no masks), the split is scored at the model's threshold
and swept over the threshold grid, and the statistics are restored. Variants: ``none`` (the
trained statistics), ``vision`` / ``all`` (which layers adapt) at ``blend`` 1.0 and 0.5.

Validation only, like every choice made for the shipped model: ``--split`` accepts ``val`` and
``train``, never ``test``. Use weights that have not seen the split (v4: tiles 1-4) to measure
what adaptation does on imagery the model has not been trained on.

Usage::

    python scripts/probe_adapt.py /tmp/v4/model.safetensors --out-dir docs/results/session11/adapt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
#: Which batch-norm layers :func:`adapt_batchnorm` re-estimates: the image encoder's only, or all.
ADAPT_SCOPES: tuple[str, ...] = ("vision", "all")
VARIANTS = {
    "none": None,
    "vision": ("vision", 1.0),
    "vision_half": ("vision", 0.5),
    "all": ("all", 1.0),
    "all_half": ("all", 0.5),
}


BNState = dict[str, tuple[Tensor, Tensor]]


def batchnorm_layers(
    model: nn.Module, scope: str = "all"
) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers with running statistics in ``scope`` (see :data:`ADAPT_SCOPES`)."""
    if scope not in ADAPT_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(ADAPT_SCOPES)}, got {scope!r}")
    layers = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        if not module.track_running_stats or module.running_mean is None:
            continue
        if scope == "vision" and not name.startswith("vision."):
            continue
        layers[name] = module
    return layers


def _snapshot(layers: dict[str, nn.modules.batchnorm._BatchNorm]) -> BNState:
    return {
        name: (bn.running_mean.detach().clone(), bn.running_var.detach().clone())
        for name, bn in layers.items()
    }


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    scope: str = "all",
    blend: float = 1.0,
) -> BNState:
    """Re-estimate batch-norm statistics on ``batches`` in place; return the old ones.

    Each layer's new statistics are the average over all batches (cumulative moving average,
    so every batch counts the same), blended with the trained ones:
    ``blend * new + (1 - blend) * trained``. Everything else in the model is untouched, and it
    is left in eval mode.

    Args:
        model: a model whose forward takes ``(images, word_ids, word_mask)``; the images
            already normalised at the model's input size.
        batches: iterable of ``(images, word_ids, word_mask)`` tensors on the model's device.
            Language-fused models see the expressions too, so pass the ones you will predict.
        scope: ``"vision"`` (the image encoder's layers) or ``"all"`` (also neck and decoder).
        blend: weight of the new statistics in ``[0, 1]``.

    Returns:
        The trained statistics, for :func:`restore_batchnorm`.

    Raises:
        ValueError: unknown scope, ``blend`` outside ``[0, 1]``, or no batch given.
    """
    if not 0.0 <= blend <= 1.0:
        raise ValueError(f"blend must be in [0, 1], got {blend}")
    layers = batchnorm_layers(model, scope)
    saved = _snapshot(layers)
    momenta = {name: bn.momentum for name, bn in layers.items()}
    model.eval()
    for bn in layers.values():
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: every batch weighs the same
        bn.train()
    seen = 0
    try:
        for images, word_ids, word_mask in batches:
            model(images, word_ids, word_mask)
            seen += 1
    except BaseException:
        restore_batchnorm(model, saved)
        raise
    finally:
        for name, bn in layers.items():
            bn.momentum = momenta[name]
        model.eval()
    if seen == 0:
        restore_batchnorm(model, saved)
        raise ValueError("adapt_batchnorm needs at least one batch")
    for name, bn in layers.items():
        old_mean, old_var = saved[name]
        bn.running_mean.mul_(blend).add_(old_mean, alpha=1.0 - blend)
        bn.running_var.mul_(blend).add_(old_var, alpha=1.0 - blend)
    return saved


@torch.no_grad()
def restore_batchnorm(model: nn.Module, state: BNState) -> None:
    """Put back the statistics returned by :func:`adapt_batchnorm`."""
    modules = dict(model.named_modules())
    for name, (mean, var) in state.items():
        bn = modules[name]
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)


def adaptation_batches(model, dataset, size: int, batch_size: int = 8):
    """``(images, word_ids, word_mask)`` batches of ``dataset`` in index order (no masks)."""
    from rrsis.eval.evaluate import _images_to_input

    for first in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(first, min(first + batch_size, len(dataset)))]
        images = _images_to_input([s["image"] for s in samples], size, model.mean, model.std)
        word_ids, word_mask = model.tokenize([s["text"] for s in samples])
        yield images, word_ids, word_mask


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--root", type=Path, default=REPO / "data" / "dubai")
    parser.add_argument("--split", default="val", choices=["val", "train"])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "src"))
    from rrsis.eval.evaluate import (
        THRESHOLD_GRID,
        best_threshold,
        evaluate,
        open_dataset,
        sweep_thresholds,
    )
    from rrsis.eval.report import write_json
    from rrsis.models.io import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.weights).eval()
    dataset = open_dataset(args.root, args.split)
    size = int(model.input_size)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"weights": str(args.weights), "split": args.split, "variants": {}}
    for name in args.variants.split(","):
        spec = VARIANTS[name]
        start = time.perf_counter()
        saved = None
        with torch.no_grad():
            if spec is not None:
                saved = adapt_batchnorm(
                    model, adaptation_batches(model, dataset, size), scope=spec[0], blend=spec[1]
                )
            adapt_s = time.perf_counter() - start
            with torch.inference_mode():
                result = evaluate(model, dataset, progress=False, resamples=1000)
                sweep = sweep_thresholds(model, dataset, THRESHOLD_GRID)
        if saved is not None:
            restore_batchnorm(model, saved)
        best = best_threshold(sweep)
        result.update({"variant": name, "adapt": spec, "split": args.split})
        write_json(result, args.out_dir / f"{args.split}_{name}.json")
        row = {
            "mIoU": result["overall"]["mIoU"],
            "oIoU": result["overall"]["oIoU"],
            "threshold": result["threshold"],
            "best_threshold": best,
            "best_mIoU": sweep[best]["mIoU"],
            "best_oIoU": sweep[best]["oIoU"],
            "adapt_seconds": round(adapt_s, 1),
            "by_kind": {k: v["mIoU"] for k, v in result["breakdown"].get("kind", {}).items()},
        }
        summary["variants"][name] = row
        print(name, json.dumps(row), flush=True)
    (args.out_dir / f"{args.split}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
