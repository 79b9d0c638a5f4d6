"""``rrsis models``: the registered models with their parameter counts."""

from __future__ import annotations

import argparse

import torch

from rrsis.models.registry import get_entry, get_model, list_models, offline_kwargs


def count_parameters(name: str) -> int:
    """Parameters of the full-size ``name`` without reading any weights.

    Built on the meta device (no memory, no time) when the parts allow it, else on the CPU.
    """
    kwargs = offline_kwargs(name)
    try:
        with torch.device("meta"):
            model = get_model(name, **kwargs)
    except (NotImplementedError, RuntimeError):
        # Some parts compute values at construction (e.g. drop-path schedules via .tolist()).
        model = get_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def _run(args: argparse.Namespace) -> int:
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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rrsis models`` to the top-level parser."""
    parser = subparsers.add_parser(
        "models", help="list registered models and their parameter counts"
    )
    parser.add_argument(
        "--no-count", action="store_true", help="skip building the models to count parameters"
    )
    parser.set_defaults(func=_run)
