"""``rrsis evaluate``, ``rrsis calibrate`` and ``rrsis compare``.

They only parse arguments, call :mod:`rrsis.eval` and print; user mistakes raise
:class:`rrsis.errors.RRSISError` subclasses that the top-level CLI prints as one line.

None of them selects checkpoints: ``evaluate`` scores the weights it is given
(``docs/protocol.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rrsis.cli.options import (
    add_backend_arg,
    add_compose_arg,
    add_dataset_args,
    add_device_arg,
    add_model_arg,
    add_overwrite_arg,
    add_progress_arg,
    backend_of,
    check_outputs,
    command_line,
    data_warnings_only,
)
from rrsis.data.files import atomic_write, outputs_of_run
from rrsis.errors import ModelError, OutputExistsError, RRSISError
from rrsis.eval.breakdown import GROUPINGS
from rrsis.eval.report import SCORES, compare_markdown, evaluation_markdown, scores, write_json
from rrsis.eval.uncertainty import DEFAULT_RESAMPLES, paired_difference
from rrsis.infer.compose import parse_rules
from rrsis.weights import DEFAULT_MODEL


def _json_out(args: argparse.Namespace) -> Path | None:
    """``--out`` checked before any work: a ``.json`` path (and its ``.md``) that can be written,
    not existing unless ``--overwrite``."""
    if args.out is None:
        return None
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise RRSISError(f"{out}: --out must name a .json file")
    check_outputs(out, out.with_suffix(".md"), overwrite=args.overwrite)
    return out


def _emit(result: dict, table: str, out: Path | None, overwrite: bool) -> None:
    """Print the table; with ``out``, also write the JSON and the table beside it (``.md``)."""
    print(table, end="")
    if out is not None:
        markdown = out.with_suffix(".md")
        with outputs_of_run():  # both files or neither
            atomic_write(out, lambda tmp: write_json(result, tmp), overwrite=overwrite)
            atomic_write(
                markdown, lambda tmp: tmp.write_text(table, encoding="utf-8"), overwrite=overwrite
            )
        print(f"wrote {out} and {markdown}")


def run_evaluate(args: argparse.Namespace) -> int:
    # torch loads when a command runs, not for `rrsis --help` or an argument error.
    from rrsis.eval.evaluate import evaluate, open_dataset
    from rrsis.models.io import model_file, resolve_model, weights_input_size

    out = _json_out(args)
    check_outputs(args.save_predictions, overwrite=args.overwrite, directory=True)
    try:
        rules = parse_rules(args.compose)
    except ValueError as error:
        raise RRSISError(f"--compose: {error}") from None
    dataset = open_dataset(args.data, args.split, args.format)
    model, untrained = resolve_model(args.model, map_location=args.device)
    if untrained:
        print(
            f"rrsis: warning: {args.model!r} is a bare registry name: its new layers are "
            "randomly initialised (untrained); pass a trained .safetensors file to measure a model",
            file=sys.stderr,
        )
    input_size = args.input_size
    weights = model_file(args.model)
    if input_size is None and weights is not None and weights.is_file():
        # Score at the size the weights were trained at when the run recorded it.
        input_size = weights_input_size(weights)
    with data_warnings_only():
        result = evaluate(
            model,
            dataset,
            protocol=args.protocol,
            batch_size=args.batch_size,
            save_predictions=args.save_predictions,
            device=args.device,
            shuffle_expressions=args.shuffle_expressions,
            empty_iou=args.empty_iou,
            progress=args.progress,
            overwrite=args.overwrite,
            input_size=input_size,
            threshold=args.threshold,
            resamples=args.resamples,
            compose=rules,
            backend=backend_of(args),
            onnx=args.onnx,
        )
    result.update(
        {
            "model_spec": args.model,
            "untrained": untrained,
            "data": str(args.data),
            "split": args.split,
            "command": command_line(args),
        }
    )
    _emit(result, evaluation_markdown(result), out, args.overwrite)
    return 0


def _read_result(path: Path, which: str) -> dict:
    """The ``which`` scores (``network`` or ``composed``) of an ``rrsis evaluate --out`` file."""
    if not path.is_file():
        raise RRSISError(f"{path}: no such file")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RRSISError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(result, dict) or not isinstance(result.get("samples"), list):
        raise RRSISError(
            f"{path}: no per-sample records; write it with `rrsis evaluate ... --out {path.name}`"
        )
    chosen = scores(result, which)
    if chosen is None or not isinstance(chosen.get("samples"), list):
        raise RRSISError(f"{path}: no {which} scores (evaluated with --compose none?)")
    return {**result, "samples": chosen["samples"]}


def _parse_by(spec: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in spec.split(",") if name.strip())
    unknown = [name for name in names if name not in GROUPINGS]
    if unknown:
        raise RRSISError(f"--by: unknown grouping {unknown[0]!r}; known: {', '.join(GROUPINGS)}")
    return names


def run_compare(args: argparse.Namespace) -> int:
    if args.resamples < 100:
        raise RRSISError(f"--resamples must be at least 100, got {args.resamples}")
    out = _json_out(args)
    by = _parse_by(args.by)
    a, b = _read_result(args.a, args.scores), _read_result(args.b, args.scores)
    for key in ("split", "protocol", "empty_iou"):
        if key in a and key in b and a[key] != b[key]:
            raise RRSISError(f"the results differ in {key}: {a[key]!r} (A) vs {b[key]!r} (B)")
    kwargs = {"resamples": args.resamples, "seed": args.seed, "empty_iou": a.get("empty_iou", 0)}
    rows = [("overall", paired_difference(a["samples"], b["samples"], **kwargs))]
    for grouping in by:
        present = {str(s.get(grouping)) for s in a["samples"]}
        order = [g for g in GROUPINGS[grouping] if g in present] or sorted(present)
        for group in order:
            subset = {grouping: group}
            rows.append(
                (
                    f"{grouping}: {group}",
                    paired_difference(a["samples"], b["samples"], subset=subset, **kwargs),
                )
            )
    comparison = {
        "a": str(args.a),
        "b": str(args.b),
        "split": a.get("split"),
        "scores": args.scores,
        "rows": {name: row for name, row in rows},
        "command": command_line(args),
    }
    _emit(comparison, compare_markdown(comparison), out, args.overwrite)
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    # torch loads when a command runs, not for `rrsis --help` or an argument error.
    from rrsis.eval.calibrate import THRESHOLD_GRID, best_threshold, sweep_thresholds
    from rrsis.eval.evaluate import open_dataset
    from rrsis.models.io import OMITTED_KEY, load_model, model_file, save_model, weights_input_size

    if args.split.lower() == "test":
        raise RRSISError(
            "thresholds are chosen on a validation split, never on test (pass --split val)"
        )
    weights = model_file(args.model)
    if weights is None or not weights.is_file():
        raise ModelError(
            f"{args.model}: model file not found (calibrate needs trained weights: "
            f"'{DEFAULT_MODEL}' or a .safetensors file)"
        )
    out = None if args.write is None else Path(args.write)
    if out is not None:
        if out.suffix.lower() != ".safetensors":
            raise RRSISError(f"{out}: --write must name a .safetensors file")
        if out.exists() and out.resolve() == weights.resolve():
            raise OutputExistsError(
                f"{out}: is the input model; write the calibrated copy elsewhere"
            )
        check_outputs(out, overwrite=args.overwrite)
    dataset = open_dataset(args.data, args.split, args.format)
    model = load_model(weights, map_location=args.device)
    stored = getattr(model, "recommended_threshold", None)
    with data_warnings_only():
        sweep = sweep_thresholds(
            model,
            dataset,
            THRESHOLD_GRID,
            batch_size=args.batch_size,
            device=args.device,
            input_size=weights_input_size(weights),
            progress=args.progress,
        )
    best = best_threshold(sweep)
    print(f"{weights} on {args.data} ({args.split}, n={int(sweep[best]['n'])}, network alone):")
    print("| threshold | mIoU | oIoU | Pr@0.5 |  |")
    print("| --- | --- | --- | --- | --- |")
    for t, m in sweep.items():
        notes = [w for w, hit in (("best", t == best), ("stored", t == stored)) if hit]
        print(
            f"| {t:.2f} | {m['mIoU']:.2f} | {m['oIoU']:.2f} | {m['Pr@0.5']:.2f} | {', '.join(notes)} |"
        )
    print(
        f"best threshold: {best} (mIoU {sweep[best]['mIoU']:.2f}; 0.5 gives {sweep[0.5]['mIoU']:.2f})"
    )
    if out is not None:
        from safetensors import safe_open  # only to read the header of the file written

        with safe_open(str(weights), framework="pt") as handle:
            omitted = OMITTED_KEY in (handle.metadata() or {})
        model.to("cpu")
        atomic_write(
            out,
            lambda tmp: save_model(model, tmp, omit_pretrained_text=omitted, threshold=best),
            overwrite=args.overwrite,
        )
        print(f"wrote {out} (threshold {best} stored; Segmenter, predict and evaluate use it)")
    return 0


def _resamples(text: str) -> int:
    value = int(text)
    if value != 0 and value < 100:
        raise argparse.ArgumentTypeError(f"must be 0 (no interval) or at least 100, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate``, ``compare`` and ``calibrate`` to the ``rrsis`` command."""
    ev = subparsers.add_parser(
        "evaluate",
        help="score a model on a dataset split, the network alone and with the rules",
        description=(
            "Predict every sample of a split and print mIoU, oIoU and Pr@0.5-0.9, overall and "
            "per object size, scatter and expression kind, in one table: the network alone "
            "(each whole expression read by the network; what compares with published "
            "methods) beside the composed masks (position, relation and attribute phrases read "
            "by the geometry rules, as `rrsis predict` does). Nothing is selected on the split."
        ),
    )
    add_model_arg(ev)
    add_dataset_args(ev)
    ev.add_argument("--split", default="test", help="split to score (default: test)")
    ev.add_argument(
        "--protocol",
        choices=("native", "lavt"),
        default="native",
        help="native: score at the mask's resolution; lavt: the published 480x480 protocol",
    )
    ev.add_argument(
        "--save-predictions",
        type=Path,
        metavar="DIR",
        help="write <id>.png masks of the network alone and composed/<id>.png with the rules",
    )
    ev.add_argument("--out", type=Path, metavar="RESULTS.json", help="write JSON (+ .md)")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument(
        "--shuffle-expressions",
        action="store_true",
        help="give each sample another sample's expression (does the model read the text?)",
    )
    ev.add_argument(
        "--empty-iou",
        type=float,
        choices=(0.0, 1.0),
        default=0.0,
        help="IoU of an empty prediction on an empty target (0 = reference code, default)",
    )
    ev.add_argument(
        "--input-size",
        type=int,
        help="native input side (default: the training size recorded in hparams.json or "
        "<weights>.json next to the weights, else the model's own)",
    )
    ev.add_argument(
        "--threshold",
        type=float,
        help="foreground probability cut (default: the one stored with the weights, else 0.5 "
        "= the paper's arg-max)",
    )
    ev.add_argument(
        "--resamples",
        type=_resamples,
        default=DEFAULT_RESAMPLES,
        help="bootstrap resamples of the overall 95 %% interval, whole images resampled "
        f"(default {DEFAULT_RESAMPLES}; 0 = none)",
    )
    add_compose_arg(ev)
    add_device_arg(ev)
    add_backend_arg(ev)
    add_overwrite_arg(ev)
    add_progress_arg(ev)
    ev.set_defaults(func=run_evaluate, _parser=ev)

    cmp_ = subparsers.add_parser(
        "compare",
        help="is model B better than model A? paired bootstrap of two evaluations",
        description=(
            "Read two `rrsis evaluate --out` files scored on the same samples and print B - A "
            "in mIoU and oIoU with a 95 % interval and the share of resamples in which B is "
            "ahead, overall and per group. Whole images are resampled with all their "
            "expressions. This measures the noise of the sample of images only; another "
            "training seed moves a model too."
        ),
    )
    cmp_.add_argument("a", type=Path, metavar="A.json", help="the reference (e.g. shipped model)")
    cmp_.add_argument("b", type=Path, metavar="B.json", help="the candidate")
    cmp_.add_argument(
        "--scores",
        choices=SCORES,
        default="network",
        help="which scores of the two files to compare: the network alone (default) or the "
        "composed masks",
    )
    cmp_.add_argument(
        "--by",
        default="kind,size",
        help="comma-separated groupings to break the difference down by (default: kind,size; "
        "also scatter, components, category; '' = overall only)",
    )
    cmp_.add_argument(
        "--resamples",
        type=int,
        default=DEFAULT_RESAMPLES,
        help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})",
    )
    cmp_.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    cmp_.add_argument("--out", type=Path, metavar="COMPARISON.json", help="write JSON (+ .md)")
    add_overwrite_arg(cmp_)
    cmp_.set_defaults(func=run_compare, _parser=cmp_)

    cal = subparsers.add_parser(
        "calibrate",
        help="choose a model's foreground threshold on a validation split",
        description=(
            "Score a model (the network alone) on a validation split at the thresholds 0.05, "
            "0.10, ..., 0.95, print the table and the best (by mIoU; ties go to the one nearest "
            "0.5), and with --write save a copy of the model that stores it (as the shipped "
            "model stores its own). The test split is refused."
        ),
    )
    add_model_arg(cal)
    add_dataset_args(cal)
    cal.add_argument("--split", default="val", help="validation split (default: val)")
    cal.add_argument("--write", type=Path, metavar="OUT.safetensors", help="calibrated copy")
    cal.add_argument("--batch-size", type=int, default=8)
    add_device_arg(cal)
    add_overwrite_arg(cal)
    add_progress_arg(cal)
    cal.set_defaults(func=run_calibrate, _parser=cal)
