"""``rrsis models``: the registered models with their parameter counts, and
``rrsis models convert-lavt`` / ``convert-rmsin``: an official LAVT or RMSIN checkpoint as an
rrsis weights file."""

from __future__ import annotations

import argparse
from pathlib import Path

from rrsis.cli.options import add_overwrite_arg, check_outputs
from rrsis.data.files import atomic_write
from rrsis.errors import RRSISError

# torch and the models load inside the handlers: importing torch takes about a second, which
# `rrsis --help` and every other command should not pay.


def count_parameters(name: str) -> int:
    """Parameters of the full-size ``name`` without reading any weights.

    Built on the meta device (no memory, no time) when the parts allow it, else on the CPU.
    """
    import torch  # heavy: see the note above

    from rrsis.models.registry import get_model, offline_kwargs

    kwargs = offline_kwargs(name)
    try:
        with torch.device("meta"):
            model = get_model(name, **kwargs)
    except (NotImplementedError, RuntimeError):
        # Some parts compute values at construction (e.g. drop-path schedules via .tolist()).
        model = get_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def _run(args: argparse.Namespace) -> int:
    from rrsis.models.registry import get_entry, list_models  # torch: see the note above

    names = list_models()
    width = max(len(n) for n in names)
    print(f"{'name':<{width}}  {'params':>9}  description")
    for name in names:
        if args.no_count:
            params = "-"
        else:
            params = f"{count_parameters(name) / 1e6:8.1f}M"
        print(f"{name:<{width}}  {params:>9}  {get_entry(name).description}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    # torch: see the note above
    from rrsis.models.convert import convert_lavt_checkpoint
    from rrsis.models.convert_rmsin import convert_rmsin_checkpoint
    from rrsis.models.io import save_model

    out = args.output
    if out.suffix.lower() != ".safetensors":
        raise RRSISError(f"{out}: the output must be a .safetensors file")
    check_outputs(out, overwrite=args.overwrite)  # before the checkpoint is read
    convert = (
        convert_rmsin_checkpoint if args.action == "convert-rmsin" else convert_lavt_checkpoint
    )
    model = convert(args.checkpoint, text_heads=args.text_heads)
    atomic_write(out, lambda tmp: save_model(model, tmp), overwrite=args.overwrite)
    kwargs = model.config["kwargs"]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"{out}: {model.config['name']}, Swin embed {kwargs['embed_dim']} depths "
        f"{kwargs['depths']} window {kwargs['window_size']}, BERT {kwargs['text_hidden']}-d x "
        f"{kwargs['text_layers']} layers, {params:.1f} M parameters"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rrsis models`` (and its ``convert-lavt`` / ``convert-rmsin``) to the parser."""
    parser = subparsers.add_parser(
        "models",
        help="list registered models and their parameter counts; convert-lavt, convert-rmsin",
        description=(
            "Without ACTION: list the registered models with their parameter counts. "
            "convert-lavt / convert-rmsin: turn an official LAVT / RMSIN checkpoint into an "
            "rrsis weights file."
        ),
        usage=(
            "rrsis models [--no-count] | "
            "rrsis models {convert-lavt,convert-rmsin} CHECKPOINT -o OUT.safetensors"
        ),
    )
    parser.add_argument(
        "--no-count", action="store_true", help="skip building the models to count parameters"
    )
    parser.set_defaults(func=_run)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=False)
    sources = {
        "convert-lavt": (
            "LAVT",
            "yz93/LAVT-RIS",
            "{'model', 'bert_model'}",
            "lavt_swin_base",
        ),
        "convert-rmsin": (
            "RMSIN",
            "Lsan2401/RMSIN",
            "{'model'} with text_encoder.*, or {'model', 'bert_model'}",
            "rmsin_swin_base",
        ),
    }
    for action, (method, repo, layout, name) in sources.items():
        convert = actions.add_parser(
            action,
            help=f"an official {method} checkpoint ({repo} layout) as an rrsis .safetensors",
            description=(
                f"Read a checkpoint saved by the official {method} code ({layout}; weights "
                "only, a pickle carrying code is refused), infer the Swin and BERT sizes from "
                f"its weights and write it as an rrsis {name} file for rrsis evaluate, predict "
                "and train --init. "
                "Assumed, as in the released models: one PWAM head, BERT heads of 64 "
                "channels, the bert-base-uncased vocabulary, 20 tokens, 480 px."
            ),
        )
        convert.add_argument("checkpoint", type=Path, help=f"official {method} .pth")
        convert.add_argument(
            "-o", "--output", type=Path, required=True, metavar="OUT.safetensors",
            help="rrsis weights",
        )  # fmt: skip
        convert.add_argument(
            "--text-heads", type=int, default=None, help="BERT heads (default: width / 64, i.e. 12)"
        )
        add_overwrite_arg(convert)
        convert.set_defaults(func=_convert)
