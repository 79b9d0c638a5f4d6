"""``rrsis serve``: the local web page and JSON API (:mod:`rrsis.serve`).

The handler builds a :class:`~rrsis.serve.config.ServeConfig`; the model loads once, before
the server listens, so a bad ``--model`` ends in one line like every other command.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import sys
from dataclasses import replace

from rrsis.cli.options import (
    add_backend_arg,
    add_compose_arg,
    add_device_arg,
    add_model_arg,
    backend_of,
    one_line_warnings,
)
from rrsis.errors import RRSISError

SERVE_PACKAGES = ("starlette", "uvicorn", "multipart")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"need a positive number, got {text!r}")
    return value


def _cmd_serve(args: argparse.Namespace) -> int:
    missing = [name for name in SERVE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise RRSISError(f"rrsis serve needs {', '.join(missing)}: pip install 'rrsis[serve]'")
    from rrsis.serve.app import serve  # Starlette and torch: loaded only for this command
    from rrsis.serve.config import Limits, ServeConfig

    if not 0 <= args.port <= 65535:
        raise RRSISError(f"--port must be in 0-65535, got {args.port}")
    limits = Limits(max_bytes=int(args.max_mb * 2**20))
    if args.max_megapixels is not None:
        limits = replace(limits, max_pixels=int(args.max_megapixels * 1e6))
    config = ServeConfig(
        model=args.model,
        host=args.host,
        port=args.port,
        device=args.device,
        compose=args.compose,
        threshold=args.threshold,
        backend=backend_of(args),
        onnx=args.onnx,
        limits=limits,
    )
    if not _loopback(args.host):
        print(
            f"rrsis: warning: listening on {args.host}: the page and API are reachable from "
            "other machines, without authentication",
            file=sys.stderr,
        )
    with one_line_warnings():
        serve(config)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``rrsis`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="a local web page (and JSON API) to segment images and see masks on a map",
        description="Serve a page where you open an image (or a bundled sample), type "
        "expressions and see each mask, with downloads (PNG, GeoTIFF, GeoJSON), and a JSON API "
        "(docs/serve.md). Listens on localhost unless --host says otherwise.",
    )
    add_model_arg(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="foreground probability cut (default: the one stored with the model, else 0.5); "
        "a request may give its own",
    )
    add_device_arg(parser)
    add_compose_arg(parser)
    add_backend_arg(parser)
    parser.add_argument(
        "--max-mb",
        type=_positive,
        default=64,
        help="largest upload in MiB, refused before it is read in full (default: 64)",
    )
    parser.add_argument(
        "--max-megapixels",
        type=_positive,
        default=None,
        help="largest image in megapixels, read from its header before decoding "
        "(default: 4096x4096 = 16.78)",
    )
    parser.set_defaults(func=_cmd_serve)
