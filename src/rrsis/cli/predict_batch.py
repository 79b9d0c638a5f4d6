"""``rrsis predict-batch``: segment many images (files or folders) into one output folder.

The handler builds a :class:`~rrsis.infer.batch.BatchConfig`, checks every input and output
(:func:`~rrsis.infer.batch.prepare_batch`) before the model loads, and runs
:func:`~rrsis.infer.batch.run_batch`. The options it shares with ``rrsis predict`` (model,
tiling, polygons, probabilities) come from :mod:`rrsis.cli.predict`, so they read the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rrsis.cli import predict
from rrsis.cli.options import add_bands_arg, add_progress_arg, one_line_warnings
from rrsis.errors import RRSISError
from rrsis.infer.batch import SUMMARY_NAME, BatchConfig, prepare_batch, run_batch


def _processes(args: argparse.Namespace):
    """The run's :class:`~rrsis.engine.predict_batch.Processes`; ``None``: one process, no
    Lightning (the default: ``--devices 1 --num-nodes 1 --accelerator auto``)."""
    if str(args.devices).strip() == "1" and args.num_nodes == 1 and args.accelerator == "auto":
        return None
    if args.device != "cpu":
        raise RRSISError(
            f"--device {args.device} chooses the device of a one-process run; with --devices, "
            "--num-nodes or --accelerator each process gets its own (--accelerator gpu)"
        )
    from rrsis.engine.predict_batch import Processes  # loads Lightning

    return Processes(args.devices, args.num_nodes, args.accelerator)


def _cmd_predict_batch(args: argparse.Namespace) -> int:
    config = BatchConfig(
        mask_format=args.format,
        overlay=args.overlay,
        vector=args.vector,
        recursive=args.recursive,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        probabilities=args.probabilities,
        bands=args.bands,
        progress=args.progress,
        min_area=args.min_area,
        vector_crs=args.vector_crs,
        merged_vector=args.merged_vector,
        vrt=args.vrt,
    )
    processes = _processes(args)
    # Missing inputs or existing outputs fail before the model loads.
    batch = prepare_batch(args.inputs, args.expression, args.out_dir, config)
    with one_line_warnings():
        if processes is None:
            rows = run_batch(batch, predict.build_segmenter(args))
        else:
            from rrsis.engine.predict_batch import run_batch_distributed  # loads Lightning

            def make_segmenter(device):
                return predict.build_segmenter(
                    argparse.Namespace(**vars(args) | {"device": device})
                )

            rows = run_batch_distributed(batch, make_segmenter, processes)
            if rows is None:  # not the first process: the first one reports
                return 0
    status = {}
    for row in rows:
        status.setdefault(row["image"], row["status"])
    counts = {s: sum(v == s for v in status.values()) for s in ("ok", "skipped", "error")}
    print(
        f"{counts['ok']} images segmented, {counts['skipped']} skipped (outputs exist), "
        f"{counts['error']} unreadable; summary in {Path(args.out_dir) / SUMMARY_NAME}"
    )
    for expression in batch.expressions:
        decided = [r["decided_by"] for r in rows if r["expression"] == expression]
        ruled = {d: decided.count(d) for d in dict.fromkeys(decided) if d not in ("", "network")}
        if ruled:
            parts = ", ".join(f"{d} on {n}" for d, n in ruled.items())
            print(f"{expression!r}: rules decided ({parts} of {len(decided)} images)")
    return 1 if counts["error"] else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict-batch`` to the ``rrsis`` command."""
    batch = subparsers.add_parser(
        "predict-batch",
        help="segment many images (files or folders) into an output folder, with a summary.csv",
    )
    batch.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    batch.add_argument(
        "-e",
        "--expression",
        action="append",
        required=True,
        help="referring expression; repeat for several (one mask per image and expression)",
    )
    batch.add_argument("-o", "--out-dir", required=True, help="output folder (created if missing)")
    batch.add_argument(
        "--format",
        choices=("auto", "tif", "png"),
        default="auto",
        help="mask format: auto (default) writes a .tif for TIFF inputs (keeping a GeoTIFF's "
        "CRS and geotransform) and a .png otherwise (a .tif with --probabilities)",
    )
    batch.add_argument("--overlay", action="store_true", help="also write overlay PNGs")
    batch.add_argument(
        "--vector",
        action="store_true",
        help="also write each mask's polygons as GeoJSON (CRS coordinates for GeoTIFFs; none "
        "for a mask without polygons)",
    )
    for flag, const, what in (
        ("--merged-vector", "polygons.gpkg", "every mask's polygons in one file (fields "),
        ("--vrt", "masks.vrt", "a VRT mosaic of the GeoTIFF masks, one band per expression"),
    ):
        what += "expression, source)" if flag == "--merged-vector" else ""
        help_text = f"also write {what}; alone: OUT_DIR/{const}; a bare name goes in OUT_DIR"
        batch.add_argument(flag, nargs="?", const=const, metavar="PATH", help=help_text)
    batch.add_argument("--recursive", action="store_true", help="search folders recursively")
    batch.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave images whose outputs all exist (resume an interrupted run)",
    )
    add_progress_arg(batch)
    _add_process_args(batch)
    predict.add_probabilities_arg(batch)
    predict.add_tiling_arg(batch)
    predict.add_polygon_args(batch)
    add_bands_arg(batch)
    predict.add_model_args(batch)
    batch.set_defaults(func=_cmd_predict_batch)


def _add_process_args(parser: argparse.ArgumentParser) -> None:
    """``--devices``, ``--num-nodes``, ``--accelerator``: several processes (docs/scale.md)."""
    parser.add_argument(
        "--devices",
        default="1",
        metavar="N",
        help="processes per machine, each segmenting its share of the images: a number, 'auto' "
        "(every GPU) or GPU indices such as 0,1 (default 1: one process on --device)",
    )
    parser.add_argument(
        "--num-nodes",
        type=_positive,
        default=1,
        metavar="M",
        help="machines (SLURM: srun with --ntasks-per-node equal to --devices; default 1)",
    )
    parser.add_argument(
        "--accelerator",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="what each of --devices runs on (default auto: GPUs when there are any)",
    )


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"need a whole number >= 1, got {text!r}")
    return int(text)
