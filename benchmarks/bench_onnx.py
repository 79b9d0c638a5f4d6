"""ONNX Runtime against PyTorch eager: one 512 px tile at batch 1, and predict-scene throughput.

Prints one JSON object. Both backends live in one process and are timed alternately (torch,
onnxruntime, torch, ...), so a busy machine slows both alike; ``ratio`` is the median
onnxruntime time over the median torch time (goal <= 0.6).

- ``tile``: ``Segmenter.predict_tiles`` on one 512 px tile for one expression (what
  ``predict-scene`` runs per window): normalise and resize to the model input, forward,
  probabilities back at 512 px. The torch backend is what ``rrsis predict`` builds (batch
  norms folded); the onnxruntime one runs the graph exported on first use, the expression's
  word features cached (the design: docs/onnx.md).
- ``graph``: the network alone at the model's input size, the word features given:
  ``model.forward_words`` in torch against the graph in ONNX Runtime at each optimisation level
  (``--levels``), from the unfolded model (what the backend exports) and from the folded one,
  and the int8 graph, each with its batch axis fixed at 1 as the backend runs it; plus the
  text encoder's time per expression (torch runs it every tile).
- ``scene``: ``predict-scene`` (``rrsis.infer.scene.predict_scene``, batch 4, 64 px overlap)
  on a generated ``--scene-size`` px GeoTIFF, megapixels per second per expression, the
  backends alternating ``--scene-repeats`` times.

    python benchmarks/bench_onnx.py --threads 2 --repeats 20 --scene-size 2048
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path


def _stats(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(times) * 1000, 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
    }


def _alternate(calls: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Each callable timed ``repeats`` times, in turn, after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="weights path (default: shipped model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--expression", default="vehicle in the parking area")
    parser.add_argument("--levels", default="basic,extended,all", help="ORT optimisation levels")
    parser.add_argument("--scene-size", type=int, default=2048, help="0: no scene run")
    parser.add_argument("--scene-repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    from rrsis.infer.onnx_backend import session_options
    from rrsis.infer.predictor import Segmenter
    from rrsis.models.io import resolve_model
    from rrsis.models.onnx_export import OnnxExportConfig, export_onnx

    out: dict = {
        "model": args.model or "default",
        "threads": args.threads,
        "tile": args.tile,
        "expression": args.expression,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        torch_seg = Segmenter.from_pretrained(args.model)
        torch_load = time.perf_counter() - start
        start = time.perf_counter()
        onnx_seg = Segmenter.from_pretrained(args.model, backend="onnxruntime")
        onnx_load = time.perf_counter() - start
    out["load_s"] = {"torch": round(torch_load, 2), "onnxruntime": round(onnx_load, 2)}
    out["input_size"] = torch_seg.input_size

    # --- the tile, as predict-scene runs it
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (1, args.tile, args.tile, 3), dtype=np.uint8)
    tokens = torch_seg.tokenize([args.expression])
    calls = {
        "torch": lambda: torch_seg.predict_tiles(tile, *tokens),
        "onnxruntime": lambda: onnx_seg.predict_tiles(tile, *tokens),
    }
    times = _alternate(calls, args.repeats, args.warmup)
    ratios = [o / t for t, o in zip(times["torch"], times["onnxruntime"])]
    out["tile"] = {name: _stats(values) for name, values in times.items()}
    out["tile"]["ratio"] = round(
        statistics.median(times["onnxruntime"]) / statistics.median(times["torch"]), 3
    )
    out["tile"]["ratio_of_pairs_median"] = round(statistics.median(ratios), 3)
    probs = [call() for call in calls.values()]
    cut = torch_seg.threshold
    out["tile"]["mask_agreement"] = round(float(((probs[0] > cut) == (probs[1] > cut)).mean()), 6)

    # --- the network alone: export choices and optimisation levels
    size = torch_seg.input_size
    image = torch_seg.network.normalise(tile)
    with torch.inference_mode():
        words = torch_seg.model.text(*tokens)
    feeds = {"image": image.numpy(), "words": words.numpy(), "word_mask": tokens[1].numpy()}
    unfused, _ = resolve_model(args.model or "default")
    graph_calls = {}

    def forward_words():
        with torch.inference_mode():
            torch_seg.model.forward_words(image, words, tokens[1])

    def text_encoder():
        with torch.inference_mode():
            torch_seg.model.text(*tokens)

    graph_calls["torch_forward_words"] = forward_words
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {
            "unfolded": (unfused, OnnxExportConfig(input_size=size)),
            "folded": (torch_seg.model, OnnxExportConfig(input_size=size)),
            "int8": (unfused, OnnxExportConfig(input_size=size, quantize="int8")),
        }
        for name, (model, config) in graphs.items():
            path = Path(tmp) / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_onnx(model, path, config)
            levels = args.levels.split(",") if name == "unfolded" else ["all"]
            for level in levels:
                session = onnxruntime.InferenceSession(
                    str(path),
                    session_options(onnxruntime, args.threads, level, batch=1),
                    providers=["CPUExecutionProvider"],
                )
                graph_calls[f"ort_{name}_{level}"] = lambda s=session: s.run(["logits"], feeds)
        graph_calls["torch_text_encoder"] = text_encoder
        times = _alternate(graph_calls, args.repeats, args.warmup)
    base = statistics.median(times["torch_forward_words"])
    out["graph"] = {
        name: {**_stats(values), "ratio_to_torch": round(statistics.median(values) / base, 3)}
        for name, values in times.items()
    }

    # --- predict-scene
    if args.scene_size:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_scene import make_scene

        from rrsis.infer.scene import SceneConfig, predict_scene

        with tempfile.TemporaryDirectory() as tmp:
            scene = make_scene(Path(tmp) / "scene.tif", args.scene_size)
            megapixels = args.scene_size**2 / 1e6
            seconds: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
            for _ in range(args.scene_repeats):
                for name, segmenter in (("torch", torch_seg), ("onnxruntime", onnx_seg)):
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        predict_scene(
                            scene,
                            ["building"],
                            Path(tmp) / f"{name}.tif",
                            segmenter,
                            SceneConfig(overwrite=True, progress=False),
                        )
                    seconds[name].append(time.perf_counter() - start)
        out["scene"] = {
            "size": f"{args.scene_size}x{args.scene_size}",
            "expressions": 1,
            **{
                f"{name}_mp_per_s": round(megapixels / statistics.median(values), 3)
                for name, values in seconds.items()
            },
            "seconds": {name: [round(v, 2) for v in values] for name, values in seconds.items()},
        }
        out["scene"]["speedup"] = round(
            statistics.median(seconds["torch"]) / statistics.median(seconds["onnxruntime"]), 3
        )
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
