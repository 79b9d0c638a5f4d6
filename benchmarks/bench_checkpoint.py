"""How long a checkpoint stops training: the synchronous writer against the background one.

Prints one JSON object. Builds a model's whole training state as Lightning checkpoints it
(``state_dict`` and the AdamW state of the engine's parameter groups, after one step so the
moments exist), then saves it alternately with the two writers of
:func:`rrsis.engine.train.checkpoint_io`:

- ``sync``: :class:`rrsis.engine.runfiles.AtomicCheckpointIO`, the training loop waits for the
  whole file;
- ``async``: :class:`rrsis.engine.runfiles.BackgroundCheckpointIO`, the same writer in a
  background thread: the loop waits only for the copy of the tensors (taken on the calling
  thread, on their device, so later steps cannot change what is written).

``blocked_s`` is what the training loop waits; ``written_s`` is until the file is complete on
disk (for ``async``, the background write joined); the files are flushed to disk before each
save (``os.sync``, untimed), so neither writer pays for the other's pages. The default model is the paper's
``lavt_swin_base`` at random initialisation (a 2.4 GB checkpoint with AdamW's moments).

    python benchmarks/bench_checkpoint.py --out-dir /tmp/ckpt_bench              # 2.4 GB files
    python benchmarks/bench_checkpoint.py --device cuda --out-dir /tmp/ckpt_bench
    python benchmarks/bench_checkpoint.py --tiny --out-dir /tmp/ckpt_bench       # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def training_state(name: str, tiny: bool, device: str) -> tuple[dict, int]:
    """``state_dict`` and AdamW state of ``name`` after one step, as Lightning stores them.

    The parts the model's recipe (``get_preset("default", name)``: the paper's for
    ``*_swin_base``) does not train have weights but no AdamW moments, as in training; their
    bytes are returned with the state (what a checkpoint without them would save).
    """
    import torch

    from rrsis.engine.module import freeze_encoders, limit_text_training
    from rrsis.engine.optim import build_optimizer, param_groups
    from rrsis.engine.presets import get_preset
    from rrsis.models import registry

    recipe = get_preset("default", name)
    if tiny:
        model = registry.get_tiny_model(name, **recipe.model_kwargs)
    else:
        model = registry.get_model(name, **registry.offline_kwargs(name, recipe.model_kwargs))
    model = model.to(device).train()
    freeze_encoders(model, text=recipe.freeze_text, vision=recipe.freeze_vision)
    limit_text_training(model, recipe.text_train_layers)
    optimizer, _ = build_optimizer(param_groups(model, 5e-5, 0.01, 1.0), 10, 0.9)
    for param in model.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    optimizer.step()
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    state = {
        "epoch": 1,
        "global_step": 100,
        "state_dict": model.state_dict(),
        "optimizer_states": [optimizer.state_dict()],
    }
    return state, frozen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lavt_swin_base")
    parser.add_argument("--tiny", action="store_true", help="tiny random model (tests)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, required=True, help="where the files go")
    args = parser.parse_args(argv)

    import torch

    from rrsis.engine.config import TrainRun
    from rrsis.engine.train import checkpoint_io

    state, frozen_bytes = training_state(args.model, args.tiny, args.device)
    moments = state["optimizer_states"][0]["state"].values()
    tensors = len(state["state_dict"]) + sum(len(m) for m in moments)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    writers = {"sync": False, "async": True}
    runs: dict[str, dict[str, list[float]]] = {
        name: {"blocked_s": [], "written_s": []} for name in writers
    }
    sizes: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, background in writers.items():
            run = TrainRun(data=[args.out_dir], out=args.out_dir, async_checkpoints=background)
            writer = checkpoint_io(run)
            path = args.out_dir / f"{name}.ckpt"
            # Start each save with the earlier file's pages on disk: otherwise a write pays
            # for flushing the one before it, and the second writer of each pair loses.
            os.sync()
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            writer.save_checkpoint(state, path)
            if args.device == "cuda":
                torch.cuda.synchronize()
            blocked = time.perf_counter() - start
            writer.teardown()  # joins the background write
            written = time.perf_counter() - start
            runs[name]["blocked_s"].append(blocked)
            runs[name]["written_s"].append(written)
            sizes[name] = path.stat().st_size
            path.unlink()
    out = {
        "benchmark": "checkpoint_stall",
        "model": args.model,
        "tiny": args.tiny,
        "device": args.device,
        "repeats": args.repeats,
        "tensors": tensors,
        "checkpoint_bytes": sizes["sync"],
        "frozen_weight_bytes": frozen_bytes,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    for name, values in runs.items():
        out[name] = {
            key: {"median": round(statistics.median(v), 3), "all": [round(x, 3) for x in v]}
            for key, v in values.items()
        }
    out["blocked_async_over_sync"] = round(
        out["async"]["blocked_s"]["median"] / out["sync"]["blocked_s"]["median"], 3
    )
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
