#!/usr/bin/env python
"""Probe test-time batch-norm adaptation (AdaBN, :mod:`rrsis.models.adapt`) on the Dubai VAL tile.

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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "none": None,
    "vision": ("vision", 1.0),
    "vision_half": ("vision", 0.5),
    "all": ("all", 1.0),
    "all_half": ("all", 0.5),
}


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
    import torch

    from rrsis.eval.evaluate import (
        THRESHOLD_GRID,
        best_threshold,
        evaluate,
        open_dataset,
        sweep_thresholds,
    )
    from rrsis.eval.report import write_json
    from rrsis.models.adapt import adapt_batchnorm, restore_batchnorm
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
