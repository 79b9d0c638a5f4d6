"""One GPU check of the paper model's speed: every measurement in one run, one JSON object.

Runs, each in its own process (so one failure does not hide the others):

* ``official_bf16_b8``: ``benchmarks/bench_official.py`` at batch 8, bf16, 480 px: logits
  against the official LAVT, forward (eager and ``torch.compile``), the operator profile of
  one forward of each, and the AdamW training step with peak memory;
* ``official_fp32_b1``: the same at batch 1 in fp32, forward only;
* ``train_step``: ``benchmarks/bench_train_step.py`` (bare random-tensor steps, alone and with
  the recipe's whole loss, against real training steps of the engine, whose precision is
  bf16-mixed on such a GPU by default; progress bar on, as ``rrsis train`` runs), on the
  shipped recipe's data, built under ``--data-root`` when missing (about a minute);
  ``train_step_nondeterministic``: the same without deterministic kernels (the engine's
  default is deterministic where kernels allow);
* ``rmsin``: ``rmsin_swin_base`` against ``lavt_swin_base`` forward at 480 px, batch 8, bf16,
  when the registry has it (skipped otherwise);
* ``checkpoint``: ``benchmarks/bench_checkpoint.py``: how long saving the paper model's whole
  training state (2.44 GB with AdamW's moments) stops training, with the synchronous writer and
  with the background one that ``rrsis train`` uses on a GPU.

    git clone https://github.com/yz93/LAVT-RIS /tmp/lavt_ris
    python scripts/gpu_check.py --official /tmp/lavt_ris            # on the GPU machine
    python scripts/gpu_check.py --official /tmp/lavt_ris --tiny     # CPU smoke run (< 2 min)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_json(argv: list[str], timeout: int) -> dict:
    """Run a benchmark script; its stdout's JSON, or the error."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    result = json.loads(done.stdout[done.stdout.index("{") :])
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def rmsin_forward(args: argparse.Namespace) -> dict:
    import torch

    from rrsis.models import registry
    from rrsis.models.speed import channels_last, inference_mode

    if "rmsin_swin_base" not in registry.MODELS:
        return {"skipped": "rmsin_swin_base is not registered"}
    device = args.device
    build = registry.get_tiny_model if args.tiny else registry.get_model
    size, batch = (64, 2) if args.tiny else (480, 8)
    image = channels_last(torch.randn(batch, 3, size, size, device=device))
    result: dict = {"size": size, "batch": batch, "dtype": args.dtype}
    times: dict[str, list[float]] = {}
    models = {}
    for name in ("lavt_swin_base", "rmsin_swin_base"):
        kwargs = {} if args.tiny else registry.offline_kwargs(name)
        models[name] = build(name, **kwargs).to(device)
        times[name] = []
    for round_ in range(2 + args.repeats):
        for name, model in models.items():
            ids, mask = model.tokenize(["the building next to the road"] * batch)
            with inference_mode(model, args.dtype):
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(image, ids.to(device), mask.to(device))
                if device == "cuda":
                    torch.cuda.synchronize()
            if round_ >= 2:
                times[name].append(1000 * (time.perf_counter() - start))
    for name, values in times.items():
        result[f"{name}_ms"] = round(sorted(values)[len(values) // 2], 2)
    result["rmsin_over_lavt"] = round(result["rmsin_swin_base_ms"] / result["lavt_swin_base_ms"], 3)
    return result


def recipe_data(root: Path, tiny: bool) -> tuple[list[Path], Path]:
    """The shipped recipe's training roots and val root under ``root``, built when missing
    (``scripts/train_default.py``'s builders; a few small synthetic scenes with ``tiny``)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from train_default import SHARED_DUBAI, build_dataset

    def build(kind: str) -> Path:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
            return build_dataset(kind, root, SHARED_DUBAI, 16 if tiny else 600, 0, tiny, 128)

    synth = build("synth")
    if tiny or not SHARED_DUBAI.is_dir():
        return [synth], synth
    return [build("dense"), synth], build("dubai")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="LAVT-RIS checkout")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU (smoke test)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per part")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path(tempfile.gettempdir()) / "rrsis-recipe",
        help="where the recipe's data is built for the training-step part (kept for reruns)",
    )
    args = parser.parse_args(argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = "bf16"
    bench = str(ROOT / "benchmarks" / "bench_official.py")
    common = ["--official", str(args.official), "--device", args.device]
    repeats = ["--repeats", str(args.repeats)]
    if args.tiny:
        common += ["--tiny", "--no-compile", "--warmup", "1"]
        repeats = ["--repeats", "3"]
        args.repeats = 3
    result: dict = {"check": "gpu_check", "device": args.device, "tiny": args.tiny}
    result["official_bf16_b8"] = run_json(
        [bench, *common, *repeats, "--batch", "8", "--dtype", "bf16", "--profile"], args.timeout
    )
    result["official_fp32_b1"] = run_json(
        [bench, *common, *repeats, "--batch", "1", "--dtype", "fp32", "--no-train"], args.timeout
    )
    step = [str(ROOT / "benchmarks" / "bench_train_step.py"), "--device", args.device]
    train, val = recipe_data(args.data_root, args.tiny)
    step += ["--data", *map(str, train), "--val-data", str(val)]
    if args.tiny:
        step += ["--tiny", "--steps", "4", "--skip", "1", "--bare-steps", "4", "--workers", "0"]
    else:
        step += ["--preload", "--workers", "4", "--bare-steps", "20", "--progress"]
    result["train_step"] = run_json(step, args.timeout)
    fewer = ["--steps", "30", "--bare-steps", "10"] if not args.tiny else []
    result["train_step_nondeterministic"] = run_json(
        [*step, *fewer, "--no-deterministic"], args.timeout
    )
    result["rmsin"] = rmsin_forward(args)
    checkpoint = [str(ROOT / "benchmarks" / "bench_checkpoint.py"), "--device", args.device]
    with tempfile.TemporaryDirectory() as folder:
        checkpoint += ["--out-dir", folder, "--repeats", "3"]
        checkpoint += ["--tiny"] if args.tiny else []
        result["checkpoint"] = run_json(checkpoint, args.timeout)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
