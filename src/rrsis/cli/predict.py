"""``rrsis predict``, ``rrsis predict-scene`` and ``rrsis demo``.

``rrsis predict-batch`` lives in :mod:`rrsis.cli.predict_batch` and shares this module's
option groups (``add_*``) and :func:`build_segmenter`.

Handlers build the library's typed configuration (:class:`~rrsis.infer.scene.SceneConfig`,
:class:`~rrsis.infer.batch.BatchConfig`) and call it; they raise
:class:`~rrsis.errors.RRSISError` subclasses for user mistakes, which the top-level CLI prints
as one line. Every output location is checked (and an existing output refused unless ``--overwrite``) before
an input is read or the model loads. Warnings (truncated or non-Latin expressions, scenes without
CRS, untrained models)
are printed as one ``rrsis: warning:`` line each. Each result says what decided its mask: the
network alone, or a composition rule (``--compose none`` turns the rules off).

The modules that load torch (the Segmenter, the scene and demo runners) are imported inside the
handlers, so that ``rrsis --help`` and argument errors stay fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rrsis.cli.options import (
    add_backend_arg,
    add_bands_arg,
    add_compose_arg,
    add_device_arg,
    add_model_arg,
    add_overwrite_arg,
    add_progress_arg,
    build_segmenter,
    check_outputs,
    one_line_warnings,
)
from rrsis.errors import OutputExistsError, RRSISError
from rrsis.infer.images import to_rgb_uint8
from rrsis.infer.layers import MIN_AREA, vector_driver
from rrsis.infer.outputs import check_mask_format, georeference, require_crs, write_prediction
from rrsis.infer.vector import parse_crs


def _check_distinct(inputs: list[Path], outputs: list[Path | None], vector=None) -> None:
    if vector is not None:
        vector_driver(vector)  # an unknown format fails before any work
    resolved = {p.resolve() for p in inputs}
    for out in outputs:
        if out is not None and out.resolve() in resolved:
            raise OutputExistsError(f"{out}: output path is also an input")


def _check_vector_crs(image: Path, vector: Path | None, vector_crs) -> None:
    """``--vector-crs`` needs an input with a CRS: refused before the model loads."""
    if vector is not None and vector_crs is not None and image.is_file():
        require_crs(image)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    add_model_arg(parser)
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="foreground probability cut (default: the one stored with the model, else 0.5)",
    )
    add_device_arg(parser)
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="run the network in bfloat16 autocast: faster on CPUs with bf16 support (about "
        "1.4x), masks differ from float32 on a few border pixels",
    )
    add_overwrite_arg(parser)
    add_compose_arg(parser)
    add_backend_arg(parser)


def decided_text(decided_by: str) -> str:
    """``"network alone"`` or ``"rules: relation"``: what decided a mask, for people."""
    return "network alone" if decided_by == "network" else f"rules: {decided_by}"


def _cmd_predict(args: argparse.Namespace) -> int:
    image_path, output, overlay = Path(args.image), Path(args.output), args.overlay
    overlay = None if overlay is None else Path(overlay)
    vector = None if args.vector is None else Path(args.vector)
    _check_distinct([image_path], [output, overlay, vector], vector)
    check_mask_format(output, args.probabilities)
    check_outputs(output, overlay, vector, overwrite=args.overwrite)
    _check_vector_crs(image_path, vector, args.vector_crs)
    with one_line_warnings():
        image = to_rgb_uint8(image_path, args.bands)
        prediction = build_segmenter(args).predict(image, args.expression)[0]
    mask = prediction.mask
    write_prediction(
        mask,
        output,
        expression=args.expression,
        image=image,
        overlay=overlay,
        vector=vector,
        georef=georeference(image_path, mask.shape),
        min_area=args.min_area,
        probabilities=prediction.probability if args.probabilities else None,
        vector_crs=args.vector_crs,
        overwrite=args.overwrite,
    )
    print(
        f"{output}: {mask.mean() * 100:.2f}% foreground ({mask.shape[1]}x{mask.shape[0]}), "
        f"{decided_text(prediction.decided_by)}"
        + (
            f", unknown words: {', '.join(prediction.unknown_words)}"
            * bool(prediction.unknown_words)
        )
    )
    return 0


def _cmd_predict_scene(args: argparse.Namespace) -> int:
    scene, output = Path(args.scene), Path(args.output)
    vector = None if args.vector is None else Path(args.vector)
    _check_distinct([scene], [output, vector], vector)
    check_outputs(output, vector, overwrite=args.overwrite)
    _check_vector_crs(scene, vector, args.vector_crs)
    from rrsis.infer.scene import SceneConfig, predict_scene, scene_rules  # loads torch

    config = SceneConfig(
        tile=args.tile,
        overlap=args.overlap,
        batch=args.batch,
        vector=vector,
        probabilities=args.probabilities,
        simplify=args.simplify,
        positions=args.positions,
        bands=args.bands,
        overviews=args.overviews,
        cog=args.cog,
        min_area=args.min_area,
        vector_crs=args.vector_crs,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    with one_line_warnings():
        segmenter = build_segmenter(args)
        predict_scene(scene, args.expression, output, segmenter, config)
    print(f"wrote {output}" + (f" and {vector}" if vector else ""))
    for expression, (region, rule) in zip(
        args.expression, scene_rules(args.expression, segmenter, config)
    ):
        said = ["position (the scene's region)"] if region else []
        said += [f"{rule} (in each window where it decides)"] if rule else []
        print(f"{expression!r}: " + ("rules: " + ", ".join(said) if said else "network alone"))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    check_outputs(args.out, overwrite=True, directory=True)  # overlays of a rerun are replaced
    from rrsis.infer.demo import run_demo  # loads torch

    with one_line_warnings():
        records = run_demo(Path(args.out), model=args.model)
    total = sum(r["seconds"] for r in records)
    print(
        f"{len(records)} overlays in {args.out}; mean {total / max(len(records), 1) * 1000:.1f} ms"
    )
    return 0


def _min_area(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"need an area >= 0, got {text!r}")
    return value


def add_probabilities_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="write float32 foreground probabilities (TIFF output) instead of the 0/255 mask; "
        "overlays and polygons still use the threshold",
    )


def add_tiling_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tiling",
        choices=("auto", "always", "never"),
        default="auto",
        help="auto (default): images over 1.5 windows (768 px) are segmented in windows "
        "(--window), blended, at the scale the model was trained at; never: resize the whole "
        "image to the model input (faster, loses small objects); always: windows for any size",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="window side in px (default: the training images' side stored with the model, "
        "else 512); for imagery finer than the training images use a proportionally larger "
        "window (e.g. 1024 at twice the resolution)",
    )


def _crs(text: str):
    try:
        return parse_crs(text)
    except RRSISError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_polygon_args(parser: argparse.ArgumentParser) -> None:
    """``--min-area`` and ``--vector-crs``: options of the ``--vector`` polygons."""
    parser.add_argument(
        "--min-area",
        type=_min_area,
        default=MIN_AREA,
        metavar="M2",
        help=f"leave polygons under M2 square metres out (geodesic, whatever the CRS; pixels for "
        f"images without georeferencing); default {MIN_AREA:g}, 0 keeps all; masks unchanged",
    )
    parser.add_argument(
        "--vector-crs",
        type=_crs,
        default=None,
        metavar="CRS",
        help="write the polygons in this CRS instead of the image's, e.g. EPSG:4326 (lon/lat, "
        "as RFC 7946 GeoJSON and web maps expect)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict``, ``predict-scene`` and ``demo`` to the ``rrsis`` command."""
    predict = subparsers.add_parser("predict", help="segment one image from an expression")
    predict.add_argument("image", help="image file (TIFF, PNG, JPEG; 1/3/4 bands, 8/16 bit)")
    predict.add_argument("expression", help='referring expression, e.g. "vehicle on the road"')
    predict.add_argument(
        "-o",
        "--output",
        required=True,
        help="mask file (.png or .tif), 0/255; a .tif from a GeoTIFF keeps its CRS and geotransform",
    )
    predict.add_argument("--overlay", default=None, help="also write an overlay PNG")
    predict.add_argument(
        "--vector",
        default=None,
        help="also write the mask's polygons: .gpkg, .shp, .geojson or .fgb (in the image's CRS "
        "for a GeoTIFF, else in pixel coordinates)",
    )
    add_probabilities_arg(predict)
    add_tiling_arg(predict)
    add_polygon_args(predict)
    add_bands_arg(predict)
    add_model_args(predict)
    predict.set_defaults(func=_cmd_predict)

    scene = subparsers.add_parser(
        "predict-scene", help="segment a large GeoTIFF scene with overlapping tiles"
    )
    scene.add_argument("scene", help="GeoTIFF scene")
    scene.add_argument("expression", nargs="+", help="one or more expressions (one band each)")
    scene.add_argument("-o", "--output", required=True, help="output GeoTIFF mask")
    scene.add_argument(
        "--vector", default=None, help="also write polygons (.gpkg, .shp, .geojson or .fgb)"
    )
    scene.add_argument("--tile", type=int, default=512, help="tile side in px (default 512)")
    scene.add_argument("--overlap", type=int, default=64, help="tile overlap in px (default 64)")
    scene.add_argument("--batch", type=int, default=4, help="tiles per forward (default 4)")
    add_probabilities_arg(scene)
    scene.add_argument(
        "--simplify", type=float, default=None, help="polygon simplification (CRS units)"
    )
    scene.add_argument(
        "--positions",
        choices=("scene", "window"),
        default="scene",
        help="'in the upper left' etc. mean the scene's (default) or each window's; the other "
        "rules (--compose) run inside each window",
    )
    add_polygon_args(scene)
    add_bands_arg(scene)
    scene.add_argument(
        "--overviews",
        action="store_true",
        help="add internal overviews to the output, for fast display of large scenes in GIS",
    )
    scene.add_argument(
        "--cog",
        action="store_true",
        help="write a Cloud Optimized GeoTIFF (tiled, with overviews), e.g. for web maps or "
        "object storage",
    )
    add_progress_arg(scene)
    add_model_args(scene)
    scene.set_defaults(func=_cmd_predict_scene)

    demo = subparsers.add_parser("demo", help="segment the bundled samples with the shipped model")
    demo.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    add_model_arg(demo)
    demo.set_defaults(func=_cmd_demo)
