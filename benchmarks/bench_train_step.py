"""Where a training step's time goes: bare model steps against real ones, split by phase.

A real training step can cost more than the model's own forward and backward: on a GPU the
default recipe has run at 5.7-7 steps/s where bare steps on random tensors timed ~18-20. This
script measures the pieces on one configuration and prints one JSON object, so one short run
says which piece costs the difference:

* ``bare``: forward, weighted cross-entropy, backward and AdamW step of the model alone on random
  tensors (what ``scripts/train_default.py`` plans epochs with; ``rrsis.engine.timing``), half
  of ``--bare-steps`` before the real steps and half after;
* ``bare_recipe``: the same on random tensors with the recipe's whole loss, as the training
  module computes it (the Dice term and the auxiliary semantic head on random class maps),
  timed alongside ``bare``: ``real`` over ``bare_recipe`` is the input pipeline and Lightning's
  loop alone, ``bare_recipe`` over ``bare`` the recipe's extra loss terms;
* ``real``: ``rrsis.engine.train.train`` on the real data for ``--steps`` steps (no validation),
  each step split by :class:`rrsis.engine.timing.StepTimer` into ``wait`` (between batches: the
  loader, Lightning's logging and checkpointing) and ``step`` (the module's training step with the
  auxiliary head, the Dice term, backward and optimiser).

Switches isolate the suspects: ``--progress`` (the progress bar, on in ``rrsis train``; on a
GPU each refresh waits for the device), ``--no-deterministic`` (cuDNN's fastest kernels),
``--no-channels-last`` (contiguous NCHW weights and images instead of the default channels-last),
``--semantic-weight 0`` (no auxiliary head), ``--workers``, ``--preload``, ``--batch-size``,
``--input-size``. On a GPU, with the data of ``make train-default`` built::

    python benchmarks/bench_train_step.py --device cuda --preload --workers 4 \\
        --labels ../shared/data/dubai-aerial
    python benchmarks/bench_train_step.py --device cuda --preload --workers 4 \\
        --labels ../shared/data/dubai-aerial --no-deterministic

On 2 CPU cores ``--steps 12`` takes about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipe_data import add_recipe_data_arguments  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_data_arguments(parser)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=60, help="real steps timed (after --skip)")
    parser.add_argument("--skip", type=int, default=5, help="first steps not timed")
    parser.add_argument("--bare-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--semantic-weight",
        type=float,
        default=0.5,
        help="auxiliary loss weight (shipped recipe, scripts/train_default.py: 0.5; 0 = no head)",
    )
    parser.add_argument("--preload", action="store_true")
    parser.add_argument(
        "--progress", action="store_true", help="progress bar on, as `rrsis train` runs"
    )
    parser.add_argument("--no-deterministic", action="store_true")
    parser.add_argument(
        "--no-channels-last", action="store_true", help="train in contiguous NCHW memory"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--tiny", action="store_true", help="tiny model (tests)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from rrsis.engine.config import TrainRun
    from rrsis.engine.presets import resolve_recipe
    from rrsis.engine.timing import StepTimer, time_bare_steps
    from rrsis.engine.train import train

    labels = args.labels if args.semantic_weight > 0 else None
    if labels is not None and not labels.is_dir():
        print(f"{labels} missing: auxiliary loss off", file=sys.stderr)
        labels = None
    classes = None
    if labels is not None:
        from rrsis.data.dubai import DubaiLabelLookup

        classes = DubaiLabelLookup(labels).num_classes
    config = resolve_recipe(
        "default",
        workers=args.workers,
        preload=args.preload,
        epochs=1000,  # --steps ends the run
        ckpt_every_n_steps=200,  # as on the GPU; the CPU preset's 25 would be timed too
        semantic_weight=args.semantic_weight if labels is not None else 0.0,
        semantic_classes=classes,
        channels_last=not args.no_channels_last,
        batch_size=args.batch_size,
        input_size=args.input_size or (64 if args.tiny else None),
    )

    # Bare steps before and after the real ones (half each): a machine whose speed drifts
    # during the run shifts both sides alike.
    first = (args.bare_steps + 1) // 2

    def time_bare(count: int, recipe_losses: bool) -> list[float]:
        if count < 1:
            return []
        return time_bare_steps(
            config.model_name, config, args.device, 3, count, args.tiny, recipe_losses
        )

    bare = time_bare(first, False)
    bare_recipe = time_bare(first, True)
    timer = StepTimer(skip=args.skip)
    # stdout carries the JSON alone: Lightning's progress bar and summary go to stderr.
    with (
        tempfile.TemporaryDirectory() as tmp,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sys.stderr),
    ):
        warnings.simplefilter("ignore")
        run = TrainRun(
            args.data,
            Path(tmp) / "run",
            config,
            val=args.val_data,
            max_steps=args.skip + args.steps,
            tiny=args.tiny,
            progress=args.progress,
            accelerator="gpu" if args.device == "cuda" else "cpu",
            semantic_labels=labels,
            deterministic=not args.no_deterministic and "warn",
        )
        train(run, callbacks=[timer])
    bare_recipe += time_bare(args.bare_steps - first, True)
    bare += time_bare(args.bare_steps - first, False)
    bare_ms = 1000 * statistics.median(bare)
    recipe_ms = 1000 * statistics.median(bare_recipe)
    real = timer.summary()
    real_ms = real.get("step_ms_median", 0) + real.get("wait_ms_median", 0)
    result = {
        "benchmark": "train_step_breakdown",
        "device": torch.cuda.get_device_name()
        if args.device == "cuda"
        else platform.processor() or platform.machine(),
        "model": config.model_name,
        "batch_size": config.batch_size,
        "input_size": config.input_size,
        "workers": config.workers,
        "preload": bool(config.preload),
        "progress": args.progress,
        "semantic_weight": config.semantic_weight,
        "dice_weight": config.dice_weight,
        "deterministic": not args.no_deterministic,
        "channels_last": config.channels_last,
        "threads": torch.get_num_threads(),
        "bare": {
            "steps_timed": len(bare),
            "step_ms_median": round(bare_ms, 2),
            "steps_per_s": round(1000 / bare_ms, 2),
            "step_ms_all": [round(1000 * t, 1) for t in bare],
        },
        "bare_recipe": {
            "steps_timed": len(bare_recipe),
            "step_ms_median": round(recipe_ms, 2),
            "steps_per_s": round(1000 / recipe_ms, 2),
            "step_ms_all": [round(1000 * t, 1) for t in bare_recipe],
        },
        "real": real,
        "real_over_bare": round(real_ms / bare_ms, 2),
        "bare_recipe_over_bare": round(recipe_ms / bare_ms, 2),
        "real_over_bare_recipe": round(real_ms / recipe_ms, 2),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
