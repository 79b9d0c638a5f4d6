"""Cold start-up of ``rrsis predict`` on one bundled 512 px tile, and where its time goes.

Prints one JSON object. Every run is a fresh interpreter (nothing imported, nothing cached in
the process); the page cache is warm after the first run, so the first one is discarded as a
warm-up. With ``--before SRC`` the same runs alternate between that source tree (e.g. the main
branch's ``src``) and this checkout's, so that a busy machine slows both alike.

    python benchmarks/bench_startup.py --repeats 7 [--before /path/to/other/checkout/src]

``wall_s``: medians (``wall_min_s``: minima; ``wall_runs_s``: every run) of the whole command,
from process start to exit; ``cpu_s``: median CPU seconds of the process (user + system).
``phases_s``: one more fresh process per source tree that runs the same path step by step
(imports, reading the weights, building the model and its text encoder, loading the state,
folding the batch norms, the first prediction, writing the mask) and times each step.
``masks_identical``: the masks written by the two trees are the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "src"


def _shown(src: str | Path) -> str:
    """A source tree as the JSON records it: relative to this checkout when inside it."""
    path = Path(src).resolve()
    try:
        return str(path.relative_to(HERE.parent))
    except ValueError:
        return str(path)


SAMPLE = HERE / "rrsis" / "data" / "samples" / "dubai_tile6_part001_y0_x0.jpg"
CLI = "import sys; from rrsis.cli import main; sys.exit(main(sys.argv[1:]))"

# Runs in a fresh interpreter: argv = sample, expression, output. Prints the phases as JSON.
PHASES = r"""
import json, sys, time
start = time.perf_counter()
phases = {}
def lap(name, since):
    now = time.perf_counter(); phases[name] = round(now - since, 4); return now
t = time.perf_counter()
import torch
t = lap("import_torch", t)
import rrsis.cli, rrsis.cli.predict
t = lap("import_rrsis_cli", t)
import rrsis.infer.predictor
t = lap("import_predictor", t)
import rrsis.models.encoders.text
t = lap("import_text_encoder", t)
from rrsis.infer import network, outputs
from rrsis.models import io
from rrsis.models.encoders import text

def timed(owner, attr, name):
    original = getattr(owner, attr)
    def wrapper(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases[name] = round(phases.get(name, 0.0) + time.perf_counter() - begin, 4)
    setattr(owner, attr, wrapper)

timed(io, "_read_safetensors", "read_weights")
timed(io, "get_model", "build_model")
timed(text.MiniLMTextEncoder, "__init__", "build_text_encoder (in build_model)")
timed(network.Network, "fuse", "fuse_batch_norms")
t = time.perf_counter()
from rrsis.infer.predictor import Segmenter
seg = Segmenter.from_pretrained()
t = lap("from_pretrained", t)
phases["load_state_and_rest"] = round(
    phases["from_pretrained"] - phases.get("read_weights", 0) - phases.get("build_model", 0)
    - phases.get("fuse_batch_norms", 0), 4)
from rrsis.infer.images import to_rgb_uint8
image = to_rgb_uint8(sys.argv[1])
t = lap("read_image", t)
prediction = seg.predict(image, sys.argv[2])[0]
t = lap("first_predict", t)
outputs.write_prediction(prediction.mask, __import__("pathlib").Path(sys.argv[3]),
                         expression=sys.argv[2], image=image, overwrite=True)
t = lap("write_output", t)
phases["total_in_process"] = round(t - start, 4)
heavy = ("transformers", "scipy", "rasterio", "shapely", "matplotlib", "pyogrio", "torch._dynamo")
loaded = [m for m in heavy if m in sys.modules]
print(json.dumps({"phases_s": phases, "threads": torch.get_num_threads(), "loaded": loaded}))
"""


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def _cold_run(src: Path, sample: Path, expression: str, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``rrsis predict`` in a fresh interpreter."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", CLI, "predict", str(sample), expression, "-o", str(out)]
        + ["--overwrite"],
        env=_env(src),
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def _phases(src: Path, sample: Path, expression: str, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PHASES, str(sample), expression, str(out)],
        env=_env(src),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _interpreter(src: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=_env(src), check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per source tree")
    parser.add_argument("--before", type=Path, help="another source tree to compare with")
    parser.add_argument("--after", type=Path, default=HERE, help="default: this checkout's src")
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--expression", default="building")
    args = parser.parse_args(argv)

    trees = {"after": args.after} if args.before is None else {"before": args.before}
    trees["after"] = args.after
    walls: dict[str, list[float]] = {name: [] for name in trees}
    cpus: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as folder:
        masks = {name: Path(folder) / f"{name}.png" for name in trees}
        for name, src in trees.items():  # warm-up: fills the page cache
            _cold_run(src, args.sample, args.expression, masks[name])
        for _ in range(args.repeats):
            for name, src in trees.items():  # alternating: load changes hit both alike
                wall, cpu = _cold_run(src, args.sample, args.expression, masks[name])
                walls[name].append(round(wall, 3))
                cpus[name].append(round(cpu, 3))
                print(f"{name}: {wall:.2f} s", file=sys.stderr)
        phases = {
            name: _phases(src, args.sample, args.expression, Path(folder) / f"{name}-p.png")
            for name, src in trees.items()
        }
        contents = {name: path.read_bytes() for name, path in masks.items()}
    result = {
        "command": f"rrsis predict {args.sample.name} {args.expression!r} -o OUT.png --overwrite",
        "cpus": len(os.sched_getaffinity(0)),
        "load_avg_1m": os.getloadavg()[0],
        "page_cache": "warm (one untimed run per tree first)",
        "interpreter_s": round(_interpreter(args.after), 3),
        "wall_s": {name: statistics.median(v) for name, v in walls.items()},
        "wall_min_s": {name: min(v) for name, v in walls.items()},
        "wall_runs_s": walls,
        "cpu_s": {name: statistics.median(v) for name, v in cpus.items()},
        "phases": phases,
        "masks_identical": len(set(contents.values())) == 1,
        "trees": {name: _shown(src) for name, src in trees.items()},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
