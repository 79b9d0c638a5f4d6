"""``rrsis predict-batch`` in one process and across several: wall time and identical outputs.

Prints one JSON object. A folder of ``--images`` tiles (the bundled 512 px Dubai samples, copied
under distinct names) is segmented by the whole command, each run a fresh interpreter, in turn
(alternating, so that other load on the machine slows every mode alike):

- ``loop``: the default, one process and no Lightning (``rrsis predict-batch DIR -e ... -o OUT``);
- ``lightning_1``: the same through Lightning's prediction loop (``--devices 1
  --accelerator cpu``): what the distributed path costs in one process;
- ``ddp_N``: ``--devices N --accelerator cpu``, N processes sharing the ``--threads`` cores
  (``OMP_NUM_THREADS`` = threads / N each, ``threads`` for the others).

    python benchmarks/bench_predict_batch.py --images 32 --repeats 3 --threads 2 --processes 2

``wall_s``: median seconds of each mode's command, from process start to exit (model loading
and, for ``ddp_N``, starting the other processes included); ``ratio_to_loop``: those medians
over ``loop``'s; ``per_image_s``: the ``seconds`` column of ``summary.csv`` (one image read,
segmented and written), median over the images of every run. ``outputs_identical``: every
mode wrote the same mask bytes and the same ``summary.csv`` but for its ``seconds`` column.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
SAMPLES = sorted((SRC / "rrsis" / "data" / "samples").glob("*.jpg"))
CLI = "import sys\nfrom rrsis.cli import main\nsys.exit(main())\n"


def _run(entry: Path, images: Path, out: Path, extra: list[str], threads: int, model: str):
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS=str(threads))
    env["PL_DISABLE_FORK"] = "1"
    args = [sys.executable, str(entry), "predict-batch", str(images), "-o", str(out)]
    args += ["-e", "building", "--model", model, "--no-progress", *extra]
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return wall


def _outputs(out: Path) -> tuple[dict, list[dict]]:
    masks = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return masks, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="cores for the whole command")
    parser.add_argument("--processes", type=int, default=2, help="N of the ddp_N mode")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    procs = args.processes
    modes = {
        "loop": ([], args.threads),
        "lightning_1": (["--devices", "1", "--accelerator", "cpu"], args.threads),
        f"ddp_{procs}": (
            ["--devices", str(procs), "--accelerator", "cpu"],
            max(1, args.threads // procs),
        ),
    }
    walls: dict[str, list[float]] = {m: [] for m in modes}
    per_image: dict[str, list[float]] = {m: [] for m in modes}
    identical = True
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        for i in range(args.images):
            shutil.copy(SAMPLES[i % len(SAMPLES)], images / f"tile{i:04d}.jpg")
        entry = root / "rrsis_entry.py"
        entry.write_text(CLI)
        reference = None
        for repeat in range(args.repeats + 1):  # the first round warms the page cache
            for mode, (extra, threads) in modes.items():
                out = root / f"{mode}-{repeat}"
                wall = _run(entry, images, out, extra, threads, args.model)
                masks, rows = _outputs(out)
                comparable = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
                comparable = [
                    {k: v.replace(str(out), "OUT") for k, v in r.items()} for r in comparable
                ]
                if reference is None:
                    reference = (masks, comparable)
                identical &= (masks, comparable) == reference
                if repeat:
                    walls[mode].append(wall)
                    per_image[mode] += [float(r["seconds"]) for r in rows]
                shutil.rmtree(out)
                print(f"{mode} round {repeat}: {wall:.2f} s", file=sys.stderr)
    loop = statistics.median(walls["loop"])
    result = {
        "images": args.images,
        "repeats": args.repeats,
        "threads": args.threads,
        "model": args.model,
        "wall_s": {m: round(statistics.median(w), 3) for m, w in walls.items()},
        "wall_runs_s": {m: [round(x, 3) for x in w] for m, w in walls.items()},
        "ratio_to_loop": {m: round(statistics.median(w) / loop, 3) for m, w in walls.items()},
        "per_image_s": {m: round(statistics.median(v), 4) for m, v in per_image.items()},
        "outputs_identical": identical,
        "load_avg_1m": [load_before, os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
