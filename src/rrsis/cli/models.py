"""``rrsis models``: the registered models with their parameter counts, and
``rrsis models convert-lavt``: an official LAVT checkpoint as an rrsis weights file."""

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


def _convert_lavt(args: argparse.Namespace) -> int:
    # torch: see the note above
    from rrsis.models.convert import convert_lavt_checkpoint
    from rrsis.models.io import save_model

    out = args.output
    if out.suffix.lower() != ".safetensors":
        raise RRSISError(f"{out}: the output must be a .safetensors file")
    check_outputs(out, overwrite=args.overwrite)  # before the checkpoint is read
    model = convert_lavt_checkpoint(args.checkpoint, text_heads=args.text_heads)
    atomic_write(out, lambda tmp: save_model(model, tmp), overwrite=args.overwrite)
    kwargs = model.config["kwargs"]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"{out}: lavt_swin_base, Swin embed {kwargs['embed_dim']} depths {kwargs['depths']} "
        f"window {kwargs['window_size']}, BERT {kwargs['text_hidden']}-d x "
        f"{kwargs['text_layers']} layers, {params:.1f} M parameters"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rrsis models`` (and ``rrsis models convert-lavt``) to the top-level parser."""
    parser = subparsers.add_parser(
        "models",
        help="list registered models and their parameter counts; convert-lavt",
        description=(
            "Without ACTION: list the registered models with their parameter counts. "
            "convert-lavt: turn an official LAVT checkpoint into an rrsis weights file."
        ),
        usage="rrsis models [--no-count] | rrsis models convert-lavt CHECKPOINT -o OUT.safetensors",
    )
    parser.add_argument(
        "--no-count", action="store_true", help="skip building the models to count parameters"
    )
    parser.set_defaults(func=_run)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=False)
    convert = actions.add_parser(
        "convert-lavt",
        help="an official LAVT checkpoint (yz93/LAVT-RIS layout) as an rrsis .safetensors",
        description=(
            "Read a checkpoint saved by the official LAVT code ({'model', 'bert_model'}; "
            "weights only, a pickle carrying code is refused), infer the Swin and BERT sizes "
            "from its weights and write it as an rrsis lavt_swin_base file for rrsis evaluate, "
            "predict and train --init. Assumed, as in the released models: one PWAM head, "
            "BERT heads of 64 channels, the bert-base-uncased vocabulary, 20 tokens, 480 px."
        ),
    )
    convert.add_argument("checkpoint", type=Path, help="official LAVT .pth")
    convert.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT.safetensors", help="rrsis weights"
    )
    convert.add_argument(
        "--text-heads", type=int, default=None, help="BERT heads (default: width / 64, i.e. 12)"
    )
    add_overwrite_arg(convert)
    convert.set_defaults(func=_convert_lavt)
