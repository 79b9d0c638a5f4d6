#!/usr/bin/env python
"""Probe alternatives to the centroid position rule on the Dubai VAL tile.

The composition rules (:mod:`rrsis.infer.compose`) read "building in the upper left" as the
predicted building objects whose centroid lies in the upper-left quadrant. This probe scores, on
the position expressions of a split, that rule against three variants on the same network
masks (``docs/results/session12/position_rule.md`` says why, and the rule for adopting one):

* ``network``: no rule, the network reads the whole expression;
* ``centroid``: the current rule;
* ``pixel``: the class mask cut to the region's pixels;
* ``union``: ``centroid`` plus the in-region part of every other object;
* ``big_pixel``: ``centroid`` for objects under ``--big`` of the image, the pixel cut above.

Every variant falls back to the network's reading of the whole expression when it keeps nothing.
Validation only: ``--split`` accepts ``val`` and ``train``, never ``test``.

Usage::

    python scripts/probe_position_rule.py /tmp/v4/model.safetensors \\
        --out docs/results/session12/position_rule_v4_val.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("network", "centroid", "pixel", "union", "big_pixel")


def region_mask(region: str, shape: tuple[int, int]):
    """``(H, W)`` bool of a :data:`rrsis.data.relations.POSITIONS` region (pixel cut)."""
    import numpy as np

    from rrsis.infer.scene import region_bounds

    r0, r1, c0, c1 = region_bounds(region, *shape)
    mask = np.zeros(shape, bool)
    mask[r0:r1, c0:c1] = True
    return mask


def position_variants(subject_p, full_p, region: str, threshold: float, min_px: int, big: float):
    """``{variant: (H, W) float}`` probabilities of one position expression."""
    import numpy as np

    from rrsis.data import relations as geo

    shape = subject_p.shape
    comps = geo.components(subject_p > threshold, min_px)
    inside = region_mask(region, shape)
    kept = geo.in_region(comps, shape, region) if comps.n else np.zeros(0, bool)
    whole = comps.select(kept)
    big_objects = comps.areas >= big * subject_p.size if comps.n else np.zeros(0, bool)
    keep = {
        "centroid": whole,
        "pixel": inside & (comps.labels > 0),
        "union": whole | (inside & (comps.labels > 0)),
        "big_pixel": comps.select(kept & ~big_objects) | (inside & comps.select(big_objects)),
    }
    out = {"network": full_p}
    for name, mask in keep.items():
        out[name] = np.where(mask, subject_p, 0.0) if mask.any() else full_p
    return out


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(REPO / "scripts"))
    from probe_compose import load_probe, network_probability, probe_parser, samples_with_kind

    parser = probe_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--big", type=float, default=0.10, help="big_pixel's object size cut")
    args = parser.parse_args(argv)
    model, dataset = load_probe(args)

    import numpy as np
    import torch

    from rrsis.data.builder import BuildConfig
    from rrsis.eval.evaluate import _images_to_input
    from rrsis.eval.metrics import summarize
    from rrsis.eval.report import write_json
    from rrsis.infer.compose import compose_probability, parse_expression

    size = int(model.input_size)
    min_px = BuildConfig().min_component_px
    inter = {v: [] for v in VARIANTS}
    union = {v: [] for v in VARIANTS}
    n_positions = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for sample, target, text, kind in samples_with_kind(dataset):
            composition = parse_expression(text, ("position",))
            if kind != "position" or composition is None:
                continue
            n_positions += 1
            x = _images_to_input([sample["image"]], size, model.mean, model.std)
            probability = network_probability(model, x, target.shape)
            variants = position_variants(
                probability(composition.subject),
                probability(text),
                composition.value,
                args.threshold,
                min_px,
                args.big,
            )
            # The "centroid" variant is the library's rule, exactly.
            library = compose_probability(
                composition, probability, args.threshold, fallback=probability(text)
            )
            assert np.array_equal(library > args.threshold, variants["centroid"] > args.threshold)
            for v, p in variants.items():
                pred = p > args.threshold
                inter[v].append(int((pred & target).sum()))
                union[v].append(int((pred | target).sum()))
    n_total = len(dataset)
    table = {}
    for v in VARIANTS:
        row = summarize(inter[v], union[v])
        ious = np.array(inter[v]) / np.maximum(np.array(union[v]), 1)
        delta = ious - np.array(inter["centroid"]) / np.maximum(np.array(union["centroid"]), 1)
        table[v] = {
            "position_mIoU": round(row["mIoU"], 2),
            "position_oIoU": round(row["oIoU"], 2),
            # The other kinds do not change: the effect on the split's mIoU is this sum / n.
            "overall_mIoU_change_vs_centroid": round(100 * float(delta.sum()) / n_total, 2),
        }
    result = {
        "weights": str(args.weights),
        "split": args.split,
        "n": n_total,
        "n_position": n_positions,
        "threshold": args.threshold,
        "big": args.big,
        "seconds": round(time.perf_counter() - start, 1),
        "table": table,
        "command": "python scripts/probe_position_rule.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
