#!/usr/bin/env python
"""Short ablation of the ``default`` preset's additions, at the benchmark's 2-epoch budget.

Trains ``lgce_effnet_minilm`` on the ``data/dubai`` train split (checkpoint selected on its val
split), exactly as ``rrsis benchmark --data data/dubai --preset default --epochs 2`` does, with
one addition switched off at a time, then scores the
selected checkpoint once on ``data/dubai`` test (native protocol, arg-max). The full preset at
the same budget is in ``docs/results/benchmark_dubai_v2``. Two epochs are a small budget:
differences of about one mIoU are within run-to-run noise.

Usage::

    python scripts/ablate_preset.py [--variants no_coords,no_dice,no_init] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("no_coords", "no_dice", "no_init")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "ablation_dubai")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from rrsis.data.refsegrs import RefSegRS
    from rrsis.engine.presets import get_preset
    from rrsis.engine.train import train
    from rrsis.eval.evaluate import evaluate
    from rrsis.models.io import load_model

    dubai = REPO / "data" / "dubai"
    args.out.mkdir(parents=True, exist_ok=True)
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        result_path = args.out / f"{variant}.json"
        if result_path.is_file():
            continue
        config = get_preset("default")
        config.epochs, config.seed = args.epochs, 0
        if variant == "no_coords":
            config.model_kwargs["coord_features"] = False
        elif variant == "no_dice":
            config.dice_weight = 0.0
        else:
            config.model_kwargs["lgce_init_scale"] = 0.0
        run_dir = args.out / "runs" / variant
        started = time.time()
        train(
            config.model_name,
            [dubai],
            run_dir,
            val_root=dubai,
            config=config,
            progress_bar=False,
        )
        model = load_model(run_dir / "model.safetensors")
        result = evaluate(
            model, RefSegRS(dubai, "test"), input_size=config.input_size, progress=False
        )
        result.pop("samples", None)
        result.update(
            variant=variant, config=config.to_dict(), wall_seconds=round(time.time() - started)
        )
        result_path.write_text(json.dumps(result, indent=2, default=str))
        kinds = {k: round(v["mIoU"], 2) for k, v in result["breakdown"]["kind"].items()}
        print(
            f"{variant}: test mIoU {result['overall']['mIoU']:.2f} "
            f"oIoU {result['overall']['oIoU']:.2f} {kinds}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
