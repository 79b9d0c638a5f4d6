#!/usr/bin/env python
"""Probe rule-based reading of position, relation and attribute phrases on the Dubai VAL tile.

For each rule set (:mod:`rrsis.infer.compose`): ``none`` (the network alone), each rule on its
own, and all three, the split is scored at every threshold of a grid, overall and by expression
kind. The network's probabilities are computed once per (image, text) and shared by all
variants. Choices are made on validation only: ``--split`` accepts ``val`` and ``train``, never
``test``. Use weights that have not seen the split (v4: tiles 1-4) for a held-out measurement.

Usage::

    python scripts/probe_compose.py /tmp/v4/model.safetensors --out docs/results/session11/compose_v4.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
VARIANTS = {
    "none": (),
    "position": ("position",),
    "relation": ("relation",),
    "attribute": ("attribute",),
    "all": ("position", "relation", "attribute"),
}


def network_probability(model, x, shape):
    """``text -> (H, W)`` foreground probabilities of ``model`` on input ``x``, cached per text."""
    import torch.nn.functional as F

    cache = {}

    def probability(text: str):
        if text not in cache:
            ids, word_mask = model.tokenize([text])
            logits = model(x, ids, word_mask).float()
            logits = F.interpolate(logits, size=shape, mode="bilinear", align_corners=False)
            cache[text] = logits.softmax(1)[0, 1].numpy()
        return cache[text]

    return probability


def probe_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every validation probe of a weights file takes (more can be added)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--root", type=Path, default=REPO / "data" / "dubai")
    parser.add_argument("--split", default="val", choices=["val", "train"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    return parser


def load_probe(args: argparse.Namespace):
    """``(model in eval mode, dataset)`` for :func:`probe_parser`'s arguments."""
    sys.path.insert(0, str(REPO / "src"))
    import torch

    from rrsis.eval.evaluate import open_dataset
    from rrsis.models.io import load_model

    torch.set_num_threads(args.threads)
    return load_model(args.weights).eval(), open_dataset(args.root, args.split)


def samples_with_kind(dataset):
    """Yield ``(sample, target bool mask, text, kind)`` for every sample of ``dataset``."""
    import numpy as np

    from rrsis.data.builder import infer_kind

    for i in range(len(dataset)):
        sample = dataset[i]
        text = sample["text"]
        kind = (sample.get("meta") or {}).get("kind") or infer_kind(text)
        yield sample, np.asarray(sample["mask"], dtype=bool), text, kind


def main(argv: list[str] | None = None) -> dict:
    args = probe_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    model, dataset = load_probe(args)
    import numpy as np
    import torch

    from rrsis.eval.evaluate import _images_to_input
    from rrsis.eval.metrics import summarize
    from rrsis.eval.report import write_json
    from rrsis.infer.compose import compose_probability, parse_expression

    size = int(model.input_size)
    keys = [(v, t) for v in VARIANTS for t in THRESHOLDS]
    inter = {k: [] for k in keys}
    union = {k: [] for k in keys}
    kinds, parsed_as = [], {v: 0 for v in VARIANTS}

    start = time.perf_counter()
    with torch.inference_mode():
        for sample, target, text, kind in samples_with_kind(dataset):
            kinds.append(kind)
            x = _images_to_input([sample["image"]], size, model.mean, model.std)
            probability = network_probability(model, x, target.shape)
            full = probability(text)
            for v, rules in VARIANTS.items():
                composition = parse_expression(text, rules) if rules else None
                parsed_as[v] += composition is not None
                for t in THRESHOLDS:
                    if composition is None:
                        p = full
                    else:
                        p = compose_probability(
                            composition, probability, t, image=sample["image"], fallback=full
                        )
                    pred = p > t
                    inter[(v, t)].append(int((pred & target).sum()))
                    union[(v, t)].append(int((pred | target).sum()))
    seconds = time.perf_counter() - start

    kinds_arr = np.array(kinds)
    table = {}
    for v in VARIANTS:
        table[v] = {}
        for t in THRESHOLDS:
            i, u = np.array(inter[(v, t)]), np.array(union[(v, t)])
            row = summarize(i.tolist(), u.tolist())
            row["by_kind"] = {
                k: summarize(i[kinds_arr == k].tolist(), u[kinds_arr == k].tolist())["mIoU"]
                for k in sorted(set(kinds))
            }
            table[v][t] = row
    best = {
        v: max(THRESHOLDS, key=lambda t: (round(table[v][t]["mIoU"], 2), -abs(t - 0.5)))
        for v in VARIANTS
    }
    result = {
        "weights": str(args.weights),
        "split": args.split,
        "n": len(dataset),
        "n_by_kind": {k: int((kinds_arr == k).sum()) for k in sorted(set(kinds))},
        "n_parsed": parsed_as,
        "seconds": round(seconds, 1),
        "best_threshold": best,
        "table": {v: {str(t): row for t, row in rows.items()} for v, rows in table.items()},
        "command": "python scripts/probe_compose.py " + " ".join(sys.argv[1:]),
    }
    for v in VARIANTS:
        for t in sorted({0.1, best[v]}):
            row = table[v][t]
            print(
                f"{v:10s} t={t:.2f} mIoU {row['mIoU']:.2f} oIoU {row['oIoU']:.2f} "
                + " ".join(f"{k} {m:.2f}" for k, m in row["by_kind"].items()),
                flush=True,
            )
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
