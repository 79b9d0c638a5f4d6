"""Masks and scores of the ONNX Runtime backend against PyTorch on a dataset split.

Prints one JSON object. Runs ``rrsis evaluate``'s library call (:func:`rrsis.eval.evaluate.evaluate`,
native protocol, composition rules on) once per backend: PyTorch, ONNX Runtime with the float32
graph, and ONNX Runtime with an int8-quantised graph (``rrsis export onnx --quantize int8``).
Each run saves its masks (the network alone and with the rules); ``agreement`` is the fraction
of all mask pixels of the split equal to PyTorch's, ``samples_identical`` the samples whose
whole mask is.

    python benchmarks/bench_onnx_quality.py --data /tmp/onnx_dubai --split test [--model default]

(the tree: ``rrsis data dubai ../shared/data/dubai-aerial /tmp/onnx_dubai``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _masks(folder: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    return {
        p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) > 0
        for p in folder.rglob("*.png")
    }


def _agreement(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], composed: bool):
    keys = sorted(k for k in reference if k.startswith("composed/") == composed)
    same = sum(int((reference[k] == other[k]).sum()) for k in keys)
    total = sum(reference[k].size for k in keys)
    identical = sum(bool((reference[k] == other[k]).all()) for k in keys)
    return {
        "agreement": round(same / total, 6),
        "samples_identical": identical,
        "samples": len(keys),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="dataset tree")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="default", help="weights path or 'default'")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 graph")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from rrsis.eval.evaluate import evaluate, open_dataset
    from rrsis.models.io import model_file, resolve_model, weights_input_size
    from rrsis.models.onnx_export import OnnxExportConfig, export_onnx

    dataset = open_dataset(args.data, args.split, "auto")
    model, _ = resolve_model(args.model)
    weights = model_file(args.model)
    size = weights_input_size(weights) if weights is not None else None
    out: dict = {
        "model": args.model,
        "data": str(args.data),
        "split": args.split,
        "samples": len(dataset),
        "threads": args.threads,
        "protocol": "native, composition rules on (rrsis evaluate's defaults)",
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        variants = [("torch", "torch", None), ("onnxruntime", "onnxruntime", None)]
        if not args.no_int8:
            int8 = tmp / "int8.onnx"
            export_onnx(model, int8, OnnxExportConfig(input_size=size, quantize="int8"))
            variants.append(("onnxruntime_int8", "onnxruntime", int8))
        masks = {}
        for name, backend, graph in variants:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = evaluate(
                    model,
                    dataset,
                    save_predictions=tmp / name,
                    progress=False,
                    input_size=size,
                    resamples=0,
                    backend=backend,
                    onnx=graph,
                )
            masks[name] = _masks(tmp / name)
            run = {
                "backend": backend,
                "graph": "int8 (dynamic quantisation)" if graph else None,
                "seconds": round(time.perf_counter() - start, 1),
                "mIoU_network": round(result["overall"]["mIoU"], 3),
                "oIoU_network": round(result["overall"]["oIoU"], 3),
                "mIoU_composed": round(result["composed"]["overall"]["mIoU"], 3),
                "oIoU_composed": round(result["composed"]["overall"]["oIoU"], 3),
            }
            if name != "torch":
                run["vs_torch_network"] = _agreement(masks["torch"], masks[name], False)
                run["vs_torch_composed"] = _agreement(masks["torch"], masks[name], True)
                base = out["runs"]["torch"]
                run["mIoU_change_network"] = round(run["mIoU_network"] - base["mIoU_network"], 3)
                run["mIoU_change_composed"] = round(run["mIoU_composed"] - base["mIoU_composed"], 3)
            out["runs"][name] = run
            print(f"{name}: {run}", file=sys.stderr)
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
