#!/usr/bin/env python
"""One-epoch probes of recipe changes for the default model, scored on the VAL tile only.

Each probe trains ``lgce_effnet_minilm`` with the ``default`` preset plus the given overrides
for one epoch (one full poly schedule, 309 steps) on ``data/dubai_dense`` (training tiles 1-4),
selects nothing (one validation at the end) and scores the Dubai validation tile (tile 5) by
size and expression kind. The test tile is never read: probes choose the recipe of the
shipped model, whose test score is measured once, by ``scripts/train_default.py``.

About 9 minutes per probe on 2 idle CPU cores. Results go to
``docs/results/recipe_probes/<name>.json`` and a table ``docs/results/recipe_probes/table.md``.

Usage::

    python scripts/probe_recipe.py base '{"pretrained_lr_scale": 0.1}'
    python scripts/probe_recipe.py encoder_lr_1x '{"pretrained_lr_scale": 1.0}'
    python scripts/probe_recipe.py semantic_aux '{"pretrained_lr_scale": 0.1, "semantic_weight": 0.5}'
    python scripts/probe_recipe.py spatial_prior '{"pretrained_lr_scale": 0.1, "model_kwargs":
        {"coord_features": true, "lgce_init_scale": 0.1, "spatial_prior": 6}}'

(``pretrained_lr_scale`` 0.1 was the preset's value when these probes ran; it is 1.0 since.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DUBAI = REPO.parent / "shared" / "data" / "dubai-aerial"
OUT = REPO / "docs" / "results" / "recipe_probes"


def table(out: Path) -> str:
    """Markdown table of every probe result in ``out``."""
    rows = [
        "| probe | overrides | val mIoU | val oIoU | category | attribute | relation | position "
        "| small | medium | large | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        kind, size = r["val"]["breakdown"]["kind"], r["val"]["breakdown"]["size"]
        cells = [
            r["name"],
            f"`{json.dumps(r['overrides'])}`",
            f"{r['val']['overall']['mIoU']:.2f}",
            f"{r['val']['overall']['oIoU']:.2f}",
            *(f"{kind[k]['mIoU']:.2f}" for k in ("category", "attribute", "relation", "position")),
            *(f"{size[k]['mIoU']:.2f}" for k in ("small", "medium", "large")),
            f"{r['train_seconds']:.0f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="probe name (file name of the result)")
    parser.add_argument("overrides", help="JSON object of TrainConfig fields to override")
    parser.add_argument("--root", type=Path, default=REPO)
    parser.add_argument("--dubai-src", type=Path, default=SHARED_DUBAI)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    import torch

    from rrsis.data.refsegrs import RefSegRS
    from rrsis.engine.presets import get_preset
    from rrsis.engine.train import train
    from rrsis.eval.evaluate import evaluate
    from rrsis.models.io import load_model

    torch.set_num_threads(2)
    overrides = json.loads(args.overrides)
    config = get_preset("default")
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise SystemExit(f"unknown TrainConfig field {key!r}")
        setattr(config, key, value)
    config.epochs, config.ckpt_every_n_steps = 1, 1000
    data = args.root / "data"
    for needed in (data / "dubai_dense", data / "dubai"):
        if not (needed / "output_phrase_train.txt").is_file():
            raise SystemExit(f"{needed} missing: run scripts/train_default.py once to build it")
    run = args.root / "runs" / "probes" / args.name
    started = time.time()
    train(
        None,
        [data / "dubai_dense"],
        run,
        val_root=data / "dubai",
        config=config,
        progress_bar=False,
        semantic_labels=args.dubai_src if config.semantic_weight else None,
    )
    seconds = time.time() - started
    model = load_model(run / "model.safetensors")
    result = evaluate(
        model, RefSegRS(data / "dubai", "val"), input_size=config.input_size, progress=False
    )
    result.pop("samples", None)
    OUT.mkdir(parents=True, exist_ok=True)
    record = {
        "name": args.name,
        "overrides": overrides,
        "split": "data/dubai:val",
        "train_seconds": seconds,
        "val": result,
    }
    (OUT / f"{args.name}.json").write_text(json.dumps(record, indent=2, default=str))
    (OUT / "table.md").write_text(table(OUT))
    print(json.dumps({"name": args.name, "val_mIoU": result["overall"]["mIoU"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
