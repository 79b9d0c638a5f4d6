#!/usr/bin/env python
"""Does the training-only semantic head segment classes better than the referring head?

Training with the auxiliary semantic loss (``rrsis.engine.auxiliary``) grows a small head that
predicts the full Dubai class map from the encoder. It is dropped at export. This probe loads a
training checkpoint (model + head) and scores, for every **category** expression of a split
("building", "water body"), the referring head's mask for that expression against the semantic
head's map of that class (arg-max over the five classes, or its probability above a threshold),
fed the same expression. If the semantic head were much better, it could give the composition
rules (``rrsis.infer.compose``) their class masks.

Validation only: ``--split`` accepts ``val`` and ``train``, never ``test``. Use a run trained on
tiles 1-4 for a held-out measurement.

Usage::

    python scripts/probe_semantic_head.py runs/default_v10 --out docs/results/session11/semantic_head_v10.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_run(run_dir: Path, checkpoint: str | None = None):
    """``(model, semantic_aux)`` from a run's checkpoint (best by val if present, else last)."""
    import torch

    from rrsis.engine.auxiliary import SemanticAuxiliary
    from rrsis.models.registry import get_model, offline_kwargs

    hparams = json.loads((run_dir / "hparams.json").read_text())
    config = hparams["model_config"]
    if checkpoint is None:
        ckpts = sorted((run_dir / "checkpoints").glob("best*.ckpt")) or [
            run_dir / "checkpoints" / "last.ckpt"
        ]
        checkpoint = str(ckpts[0])
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    name = config["name"]
    model = get_model(name, **{**offline_kwargs(name), **config.get("kwargs", {})})
    model.load_state_dict(
        {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    )
    aux = SemanticAuxiliary(
        model, model.vision.out_channels, int(hparams["train"]["semantic_classes"])
    )
    aux.load_state_dict(
        {k[len("semantic_aux.") :]: v for k, v in state.items() if k.startswith("semantic_aux.")}
    )
    return model.eval(), aux.eval(), checkpoint


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", help="a .ckpt path (default: best*.ckpt, else last)")
    parser.add_argument("--root", type=Path, default=REPO / "data" / "dubai")
    parser.add_argument("--split", default="val", choices=["val", "train"])
    parser.add_argument("--threshold", type=float, default=0.1, help="referring head's cut")
    parser.add_argument("--limit", type=int, help="first N samples only (smoke runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "src"))
    import numpy as np
    import torch
    import torch.nn.functional as F

    from rrsis.data.dubai import DUBAI_TAXONOMY
    from rrsis.eval.evaluate import _images_to_input, open_dataset
    from rrsis.eval.metrics import summarize

    torch.set_num_threads(args.threads)
    model, aux, checkpoint = load_run(args.run_dir, args.checkpoint)
    dataset = open_dataset(args.root, args.split)
    size = int(model.input_size)
    names = list(DUBAI_TAXONOMY.classes)  # channel c of the head = class id c + 1
    cuts = (0.3, 0.4, 0.5)
    keys = ["referring", "semantic_argmax", *(f"semantic_p>{c}" for c in cuts)]
    inter = {k: [] for k in keys}
    union = {k: [] for k in keys}
    categories = []
    start = time.perf_counter()
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    with torch.inference_mode():
        for i in range(n):
            sample = dataset[i]
            meta = sample.get("meta") or {}
            if meta.get("kind") != "category" or meta.get("category") not in names:
                continue
            target = np.asarray(sample["mask"], dtype=bool)
            x = _images_to_input([sample["image"]], size, model.mean, model.std)
            ids, word_mask = model.tokenize([sample["text"]])
            logits = model(x, ids, word_mask).float()
            sem = aux.head([aux._maps[s] for s in aux.stages]).float()
            aux._maps.clear()
            logits = F.interpolate(logits, size=target.shape, mode="bilinear", align_corners=False)
            sem = F.interpolate(sem, size=target.shape, mode="bilinear", align_corners=False)
            c = names.index(meta["category"])
            sem_p = sem.softmax(1)[0]
            preds = {
                "referring": (logits.softmax(1)[0, 1] > args.threshold).numpy(),
                "semantic_argmax": (sem_p.argmax(0) == c).numpy(),
            }
            for cut in cuts:
                preds[f"semantic_p>{cut}"] = (sem_p[c] > cut).numpy()
            for k, pred in preds.items():
                inter[k].append(int((pred & target).sum()))
                union[k].append(int((pred | target).sum()))
            categories.append(meta["category"])
    cats = np.array(categories)
    table = {}
    for k in keys:
        i, u = np.array(inter[k]), np.array(union[k])
        row = summarize(i.tolist(), u.tolist())
        row["by_category"] = {
            c: summarize(i[cats == c].tolist(), u[cats == c].tolist())["mIoU"]
            for c in sorted(set(categories))
        }
        table[k] = row
        print(
            f"{k:18s} mIoU {row['mIoU']:.2f} oIoU {row['oIoU']:.2f} "
            + " ".join(f"{c} {m:.1f}" for c, m in row["by_category"].items()),
            flush=True,
        )
    result = {
        "run_dir": str(args.run_dir),
        "checkpoint": checkpoint,
        "split": args.split,
        "n_category_expressions": len(categories),
        "threshold": args.threshold,
        "seconds": round(time.perf_counter() - start, 1),
        "table": table,
        "command": "python scripts/probe_semantic_head.py " + " ".join(sys.argv[1:]),
    }
    if args.out:
        from rrsis.eval.report import write_json

        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
