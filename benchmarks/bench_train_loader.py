"""Training input pipeline: batches per second of the default recipe's data, decoded per epoch
or preloaded into RAM (``--preload``), alone and feeding real training steps.

Uses the default recipe's data (``data/dubai_dense`` + ``data/synth`` train splits, the
auxiliary class maps from the Dubai source tree), batch 8 at 320x320, and prints one JSON object:

* ``loader``: samples/s of the train DataLoader alone, per mode;
* ``train``: seconds per optimiser step of ``lgce_effnet_minilm`` (cross-entropy on the
  referring mask, AdamW) fed by that loader, per mode; the model shares the cores with the
  loader workers, as in a real run;
* ``preload``: seconds spent preloading and bytes held.

    python benchmarks/bench_train_loader.py [--threads 2] [--workers 2] [--batches 40] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipe_data import add_recipe_data_arguments  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_data_arguments(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batches", type=int, default=40, help="loader batches timed per mode")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per mode")
    args = parser.parse_args(argv)
    for root in [*args.data, args.val_data, args.labels]:
        if not root.is_dir():
            print(f"error: {root} not found (make train-default builds the data)", file=sys.stderr)
            return 2

    import torch
    import torch.nn.functional as F

    from rrsis.data.dubai import DubaiLabelLookup
    from rrsis.engine.datamodule import RefSegDataModule
    from rrsis.engine.train import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("lgce_effnet_minilm", {"coord_features": True})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    result: dict = {
        "threads": args.threads,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "size": args.size,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loader": {},
        "train": {},
    }
    for mode in ("decode", "preload"):
        dm = RefSegDataModule(
            [str(r) for r in args.data], str(args.val_data), model.tokenize, args.size,
            model.mean, model.std, batch_size=args.batch_size, workers=args.workers,
            augment=True, semantic_lookup=DubaiLabelLookup(args.labels),
            preload=mode == "preload",
        )  # fmt: skip
        start = time.perf_counter()
        dm.setup("fit")
        if mode == "preload":
            result["preload"] = {
                "seconds": round(time.perf_counter() - start, 1),
                "samples": len(dm.train_dataset) + len(dm.val_dataset),
                "train_bytes": dm.train_dataset.dataset.nbytes,
            }
        loader = dm.train_dataloader()
        batches = iter(loader)
        next(batches)  # workers started
        start = time.perf_counter()
        for _ in range(args.batches):
            next(batches)
        seconds = time.perf_counter() - start
        result["loader"][mode] = round(args.batches * args.batch_size / seconds, 1)

        model.train()
        times = []
        for step in range(args.steps + 2):
            start = time.perf_counter()
            batch = next(batches)
            logits = model(batch["image"], batch["word_ids"], batch["word_mask"])
            loss = F.cross_entropy(logits, batch["mask"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step >= 2:
                times.append(time.perf_counter() - start)
        result["train"][mode] = round(sum(times) / len(times), 3)
        del batches, loader
    result["train_speedup"] = round(result["train"]["decode"] / result["train"]["preload"], 2)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
