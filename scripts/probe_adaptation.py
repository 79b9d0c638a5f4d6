#!/usr/bin/env python
"""Fine-tuning on a few labelled image parts of a new area: what does it buy? (val tile only)

The protocol is fixed in ``docs/results/session14/adaptation_rule.md``. Everything runs through
the user's commands (``rrsis data from-labels``, ``rrsis train --init``, ``rrsis calibrate``,
``rrsis evaluate``, ``rrsis compare``), on one Dubai tile split by image part:

* ``--train-parts`` (labelled, fine-tuned on; 512 px crops 128 px apart),
* ``--val-part`` (labelled, picks the checkpoint and the threshold),
* ``--eval-parts`` (scored only; the 512 px grid), never trained or selected on.

Use weights that have never seen the tile (v4: tiles 1-4) on tile 5. The script refuses tile 6,
the test tile: its labels stay out of every training run. Usage::

    git show eb527d8:src/rrsis/weights/default.safetensors > /tmp/v4/model.safetensors
    python scripts/probe_adaptation.py /tmp/v4/model.safetensors --train-parts 1 2 \\
        --work /tmp/adapt --out-dir docs/results/session14/adapt_2parts

Writes, in ``--out-dir``: the evaluations (``zero_shot*.json``, ``finetuned*.json``), the paired
comparisons (``compare_*.json``/``.md``), ``summary.json`` (the numbers, the commands and the
fine-tuning wall time) and the run's ``hparams.json``. The run directory stays in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RRSIS = str(Path(sys.executable).parent / "rrsis")


def run(cmd: list[str], log: list[dict]) -> float:
    """Run one rrsis command (printed and recorded), return its wall time."""
    print("$", shlex.join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    log.append({"command": shlex.join(cmd), "seconds": round(seconds, 1)})
    return seconds


def stage(src: Path, tile: int, parts: list[int], folder: Path) -> None:
    """Link the given parts' images and label maps into ``folder/images`` and ``folder/labels``."""
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for part in parts:
        stem = f"tile{tile}_part{part:03d}"
        image = src / f"tile{tile}" / "images" / f"image_part_{part:03d}.jpg"
        mask = src / f"tile{tile}" / "masks" / f"image_part_{part:03d}.png"
        for target, link in (
            (image, folder / "images" / f"{stem}.jpg"),
            (mask, folder / "labels" / f"{stem}.png"),
        ):
            if not target.is_file():
                raise SystemExit(f"missing {target}")
            if not link.exists():
                os.symlink(target.resolve(), link)


def overall(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {k: round(data["overall"][k], 2) for k in ("mIoU", "oIoU", "Pr@0.5")} | {
        "n": data["n"],
        "threshold": data["threshold"],
        "by_kind": {k: round(v["mIoU"], 2) for k, v in data["breakdown"]["kind"].items()},
        "by_category": {k: round(v["mIoU"], 2) for k, v in data["breakdown"]["category"].items()},
    }


def best_threshold(calibrate_stdout: str) -> float:
    for line in calibrate_stdout.splitlines():
        if line.startswith("best threshold:"):
            return float(line.split(":", 1)[1].split()[0])
    raise SystemExit("rrsis calibrate printed no best threshold")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="weights that have not seen --tile")
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared/data/dubai-aerial")
    parser.add_argument("--tile", type=int, default=5)
    parser.add_argument("--train-parts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--val-part", type=int, default=3)
    parser.add_argument("--eval-parts", type=int, nargs="+", default=[4, 5, 6, 7, 8, 9])
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--replay",
        nargs="+",
        default=[],
        help="RefSegRS roots whose train splits join the fine-tuning (the model's own data)",
    )
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (data, run)")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.tile == 6:
        raise SystemExit("tile 6 is the test tile: its labels are never trained on")
    used = [*args.train_parts, args.val_part]
    if set(used) & set(args.eval_parts) or len(set(used)) != len(used):
        raise SystemExit("train, val and eval parts must be disjoint")
    from rrsis.data.dubai import DUBAI_TAXONOMY

    work, out = args.work, args.out_dir
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    taxonomy = work / "dubai_taxonomy.json"
    taxonomy.write_text(json.dumps(DUBAI_TAXONOMY.to_json(), indent=1))
    log: list[dict] = []

    # Labelled parts (train + val) and the scored parts, through `rrsis data from-labels`.
    labelled, scored = work / "labelled_src", work / "scored_src"
    stage(args.src, args.tile, used, labelled)
    stage(args.src, args.tile, args.eval_parts, scored)
    split_file = work / "labelled_splits.txt"
    split_file.write_text(
        "".join(f"tile{args.tile}_part{p:03d} train\n" for p in args.train_parts)
        + f"tile{args.tile}_part{args.val_part:03d} val\n"
    )
    (work / "scored_splits.txt").write_text(
        "".join(f"tile{args.tile}_part{p:03d} test\n" for p in args.eval_parts)
    )
    labelled_data, scored_data = work / "labelled", work / "scored"
    for folder, data, crop_args, splits in (
        (labelled, labelled_data, ["--stride", "128"], split_file),
        (scored, scored_data, [], work / "scored_splits.txt"),
    ):
        if not (data / "output_phrase_train.txt").exists():
            cmd = [RRSIS, "data", "from-labels", str(folder / "images"), str(folder / "labels")]
            cmd += [str(data), "--taxonomy", str(taxonomy), "--split-file", str(splits)]
            run(cmd + ["--crop", "512", *crop_args, "--overwrite"], log)

    def evaluate(weights: Path, name: str, threshold: float | None) -> dict:
        results = {}
        for compose in ("all", "none"):
            path = out / f"{name}_{compose}.json"
            cmd = [RRSIS, "evaluate", "--model", str(weights), "--data", str(scored_data)]
            cmd += ["--split", "test", "--compose", compose, "--resamples", "2000"]
            cmd += ["--no-progress", "--overwrite", "--out", str(path)]
            if threshold is not None:
                cmd += ["--threshold", str(threshold)]
            run(cmd, log)
            results[compose] = overall(path)
        return results

    def calibrate(weights: Path) -> float:
        cmd = [RRSIS, "calibrate", "--model", str(weights), "--data", str(labelled_data)]
        cmd += ["--split", "val", "--no-progress"]
        print("$", shlex.join(cmd), flush=True)
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        print(done.stdout)
        log.append({"command": shlex.join(cmd)})
        return best_threshold(done.stdout)

    summary: dict = {
        "rule": "docs/results/session14/adaptation_rule.md",
        "weights": str(args.weights),
        "tile": args.tile,
        "train_parts": args.train_parts,
        "val_part": args.val_part,
        "eval_parts": args.eval_parts,
        "replay": args.replay,
        "lr": args.lr,
        "epochs": args.epochs,
        "triplets": {
            split: len((data / f"output_phrase_{split}.txt").read_text().splitlines())
            for data, split in (
                (labelled_data, "train"),
                (labelled_data, "val"),
                (scored_data, "test"),
            )
        },
    }
    summary["zero_shot"] = evaluate(args.weights, "zero_shot", None)
    zero_t = calibrate(args.weights)
    summary["zero_shot_calibrated"] = evaluate(args.weights, "zero_shot_calibrated", zero_t)

    run_dir = work / "run"
    cmd = [RRSIS, "train", "--init", str(args.weights), "--preset", "default"]
    cmd += ["--data", str(labelled_data), *args.replay, "--val-data", str(labelled_data)]
    cmd += ["--out", str(run_dir), "--lr", str(args.lr), "--epochs", str(args.epochs)]
    cmd += ["--seed", str(args.seed), "--preload", "--no-progress"]
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        cmd.append("--resume")
    summary["finetune_seconds"] = round(run(cmd, log), 1)
    (out / "hparams.json").write_text((run_dir / "hparams.json").read_text())
    tuned = run_dir / "model.safetensors"
    tuned_t = calibrate(tuned)
    summary["finetuned"] = evaluate(tuned, "finetuned", tuned_t)

    for compose in ("all", "none"):
        for base in ("zero_shot", "zero_shot_calibrated"):
            cmd = [RRSIS, "compare", str(out / f"{base}_{compose}.json")]
            cmd += [str(out / f"finetuned_{compose}.json"), "--by", "kind,category"]
            cmd += ["--out", str(out / f"compare_{base}_vs_finetuned_{compose}.json")]
            run(cmd + ["--overwrite"], log)
            data = json.loads((out / f"compare_{base}_vs_finetuned_{compose}.json").read_text())
            summary.setdefault("paired", {})[f"{base}->finetuned/{compose}"] = data["rows"][
                "overall"
            ]
    summary["thresholds"] = {"zero_shot_calibrated": zero_t, "finetuned": tuned_t}
    summary["commands"] = log
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("zero_shot_calibrated", "finetuned")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
