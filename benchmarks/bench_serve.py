"""``rrsis serve``: API latency against the same Segmenter call in Python, and memory over time.

    python benchmarks/bench_serve.py --threads 2 --repeats 20 --requests 200

Starts ``python -m rrsis.cli serve`` (shipped model) on a free port in a subprocess and loads
the same model in this process. Latency: one 512 px tile (a bundled sample) and one expression,
``POST /api/predict`` with the JPEG uploaded (wall time at the client: upload, decode, model,
mask PNG, polygons, JSON) against ``Segmenter.predict(image, expression)`` here (the model call
alone), ``--repeats`` times each, alternately, after warm-up; medians and their ratio. Memory:
the server's resident set (``VmRSS`` of ``/proc/PID/status``) after the warm-up and every 50 of
``--requests`` further requests (the tile uploaded, two expressions each). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "rrsis" / "data" / "samples" / "dubai_tile6_part001_y0_x0.jpg"


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "serve_screenshot", ROOT / "scripts/serve_screenshot.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls of each kind")
    parser.add_argument("--requests", type=int, default=200, help="requests for the memory check")
    parser.add_argument("--expression", default="building")
    args = parser.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server inherits it
    import httpx
    import torch

    from rrsis.infer.images import to_rgb_uint8
    from rrsis.infer.predictor import Segmenter

    torch.set_num_threads(args.threads)
    e2e = _load_script()
    data = SAMPLE.read_bytes()
    image = to_rgb_uint8(SAMPLE)
    segmenter = Segmenter.from_pretrained()
    load_before = os.getloadavg()[0]
    with e2e.running_server() as (url, process), httpx.Client(timeout=120) as client:

        def ask(expressions: list[str]) -> dict:
            answer = client.post(
                url + "api/predict",
                files={"image": (SAMPLE.name, data, "image/jpeg")},
                data={"expression": expressions},
            )
            answer.raise_for_status()
            return answer.json()

        for _ in range(3):
            ask([args.expression])
            segmenter.predict(image, args.expression)
        api_ms, python_ms, server_model_ms = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            body = ask([args.expression])
            api_ms.append((time.perf_counter() - start) * 1000)
            server_model_ms.append(body["results"][0]["seconds"] * 1000)
            start = time.perf_counter()
            prediction = segmenter.predict(image, args.expression)[0]
            python_ms.append((time.perf_counter() - start) * 1000)
        same_mask = body["results"][0]["foreground"] == round(float(prediction.mask.mean()), 6)

        rss = {"after_warmup": rss_mb(process.pid)}
        for index in range(1, args.requests + 1):
            ask([args.expression, "road"])
            if index % 50 == 0:
                rss[f"after_{index}"] = rss_mb(process.pid)
    api, python = statistics.median(api_ms), statistics.median(python_ms)
    result = {
        "command": "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:]),
        "tile": f"{SAMPLE.name} ({image.shape[1]}x{image.shape[0]} JPEG, uploaded)",
        "expression": args.expression,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "repeats": args.repeats,
        "api_ms_median": round(api, 1),
        "python_predict_ms_median": round(python, 1),
        "api_over_python": round(api / python, 3),
        "server_model_ms_median": round(statistics.median(server_model_ms), 1),
        "same_foreground_as_python": same_mask,
        "requests": args.requests,
        "server_rss_mb": rss,
        "rss_growth_mb": round(rss[f"after_{args.requests // 50 * 50}"] - rss["after_warmup"], 1)
        if args.requests >= 50
        else None,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
