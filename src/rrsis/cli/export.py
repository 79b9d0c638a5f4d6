"""``rrsis export onnx``: a model's per-tile graph as an ONNX file (docs/onnx.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rrsis.cli.options import add_model_arg, add_overwrite_arg, check_outputs, one_line_warnings
from rrsis.errors import RRSISError

# torch, onnx and onnxruntime load inside the handler (seconds `rrsis --help` should not pay).


def _export_onnx(args: argparse.Namespace) -> int:
    out = args.output
    if out.suffix.lower() != ".onnx":
        raise RRSISError(f"{out}: the output must be a .onnx file")
    check_outputs(out, overwrite=args.overwrite)  # before the model is read
    from rrsis.infer.onnx_backend import compare_with_torch
    from rrsis.models.io import resolve_model, write_whole
    from rrsis.models.onnx_export import OnnxExportConfig, export_onnx

    with one_line_warnings():
        model, untrained = resolve_model(args.model)
        if untrained:
            print(f"rrsis: warning: {args.model!r} has random weights (a bare registry name)")
        config = OnnxExportConfig(args.opset, args.text_features, args.input_size, args.quantize)
        found: dict[str, str] = {}
        write_whole(out, lambda tmp: found.update(export_onnx(model, tmp, config)), args.overwrite)
    meta = {key.removeprefix("rrsis."): value for key, value in found.items()}
    size = int(meta["input_size"])
    text = "word features (cached per expression)" if meta["text_features"] == "cached" else "ids"
    print(
        f"{out}: {meta['model_name']}, opset {meta['opset']}, image (batch, 3, {size}, {size}), "
        f"text as {text}{', int8' if args.quantize else ''}, {out.stat().st_size / 1e6:.1f} MB"
    )
    if args.check:
        with one_line_warnings():
            error, agreement = compare_with_torch(model, out)
        print(
            f"check on a random {size} px image: max |logit difference| vs PyTorch {error:.2e}, "
            f"{agreement * 100:.2f}% of mask pixels agree"
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rrsis export onnx`` to the top-level parser."""
    parser = subparsers.add_parser(
        "export",
        help="export a model for other runtimes (onnx)",
        description="Export a model for other runtimes.",
    )
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    onnx = formats.add_parser(
        "onnx",
        help="the per-tile graph (image encoder, fusion, LGCE, decoder) as ONNX",
        description=(
            "Write the part of the model that runs per tile as an ONNX graph: image (B,3,S,S) "
            "normalised, words (B,N,C) from the text encoder, word_mask (B,N) -> logits "
            "(B,2,S,S); batch and token axes dynamic, S fixed. The text encoder stays out "
            "(it runs once per expression; its features serve every tile). Input size, "
            "mean/std, threshold, tokenizer and known words are in the file's metadata. "
            "Run it with `--backend onnxruntime` or Segmenter(backend='onnxruntime', "
            "onnx=FILE) (docs/onnx.md)."
        ),
    )
    add_model_arg(onnx)
    onnx.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT.onnx", help="ONNX file"
    )
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    onnx.add_argument(
        "--text-features",
        choices=("cached", "in-graph"),
        default=None,
        help="'cached': word features computed outside the graph, once per expression "
        "(default where the model allows it); 'in-graph': token ids in, text encoder inside",
    )
    onnx.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="image side of the graph (default: the model's input size)",
    )
    onnx.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help="dynamic int8 quantisation of the weights (ONNX Runtime; smaller, masks differ "
        "slightly: docs/results/onnx/)",
    )
    onnx.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip running the file in ONNX Runtime against PyTorch after the export",
    )
    add_overwrite_arg(onnx)
    onnx.set_defaults(func=_export_onnx)
