"""Option groups that several ``rrsis`` commands share, defined once.

Each ``add_*`` function adds one option (or a small group) with the same name, default and help
text wherever it appears, so ``--device`` or ``--overwrite`` mean the same thing in every command.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rrsis.data.files import prepare_output
from rrsis.errors import DataWarning

#: What ``--model`` accepts, in every command that takes a model.
MODEL_HELP = (
    "'default' (the shipped model), a .safetensors file written by rrsis, or a registry name "
    "(rrsis models list)"
)


def add_model_arg(
    parser: argparse.ArgumentParser, default: str | None = "default", required: bool = False
) -> None:
    """``--model``: the shipped model, a weights file or a registry name (one rule for all)."""
    shown = f" (default: {default})" if default and not required else ""
    parser.add_argument("--model", default=default, required=required, help=MODEL_HELP + shown)


def add_device_arg(parser: argparse.ArgumentParser, default: str | None = "cpu") -> None:
    """``--device``: the torch device the model runs on."""
    shown = default or "cuda when available, else cpu"
    parser.add_argument(
        "--device", default=default, help=f"torch device: cpu, cuda, cuda:1 (default: {shown})"
    )


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace outputs that exist (refused otherwise, before any work)."""
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def check_outputs(
    *paths: str | Path | None, overwrite: bool = False, directory: bool = False
) -> None:
    """Check every output location before any input is read or a model is loaded.

    Each path (``None`` skipped) must be creatable (its parent a directory or creatable, and
    writable) and absent unless ``overwrite``; an output ``directory`` must be absent or empty
    unless ``overwrite``. The temporaries of killed runs are removed from where the outputs go.
    Raises :class:`~rrsis.errors.RRSISError` with one line naming the path and the problem.
    """
    for path in paths:
        if path is not None:
            prepare_output(path, overwrite=overwrite, directory=directory)


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: hide progress bars (``args.progress`` is then False)."""
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="hide progress bars",
    )


def add_compose_arg(parser: argparse.ArgumentParser, default: str = "all") -> None:
    """``--compose``: the geometry rules that read position, relation and attribute phrases."""
    parser.add_argument(
        "--compose",
        default=default,
        metavar="RULES",
        help="read position/relation/attribute phrases with geometry rules on the network's "
        f"objects (docs/compose.md): 'all', 'none' (the network alone) or a comma list of "
        f"position,relation,attribute (default: {default})",
    )


def band_list(text: str) -> list[int]:
    """Parse ``R,G,B`` (or one band) 1-based band numbers for ``--bands``."""
    try:
        bands = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        bands = []
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"need R,G,B (or one band), numbers from 1: {text!r}")
    return bands


def add_bands_arg(parser: argparse.ArgumentParser) -> None:
    """``--bands R,G,B``: which bands of a multispectral file are read as red, green, blue."""
    parser.add_argument(
        "--bands",
        type=band_list,
        default=None,
        metavar="R,G,B",
        help="band numbers (from 1) to read as red, green, blue, e.g. 4,3,2 for a Sentinel-2 "
        "stack (default: 1,2,3; 1 band: grey)",
    )


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Print each distinct ``UserWarning`` raised inside as one ``rrsis: warning:`` line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for item in caught:
                text = str(item.message).splitlines()[0] if str(item.message) else ""
                if issubclass(item.category, UserWarning) and text not in seen:
                    seen.add(text)
                    print(f"rrsis: warning: {text}", file=sys.stderr)


def add_dataset_args(parser: argparse.ArgumentParser, data_help: str = "dataset root") -> None:
    """``--data ROOT`` and ``--format``: a RefSegRS or RRSIS-D tree (format detected by default)."""
    parser.add_argument("--data", required=True, type=Path, help=data_help)
    parser.add_argument(
        "--format", choices=("auto", "refsegrs", "rrsisd"), default="auto", help="dataset layout"
    )


def command_line(args: argparse.Namespace) -> str:
    """An equivalent ``rrsis`` command line rebuilt from the parsed arguments.

    The handlers see only the parsed namespace (``main(argv)`` may be called from Python), so
    the recorded command lists every option that differs from its default, in parser order.
    """
    parser: argparse.ArgumentParser = args._parser
    words = ["rrsis", parser.prog.split()[-1]]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "func"):
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:  # a switch (--overwrite, --no-progress): its flag alone
            words.append(flag)
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def with_one_line_warnings(handler: Callable[[argparse.Namespace], int]):
    """``handler`` with its ``UserWarning`` lines printed by :func:`one_line_warnings`."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        with one_line_warnings():
            return handler(args)

    return wrapped


@contextmanager
def data_warnings_only() -> Iterator[None]:
    """:func:`one_line_warnings` for data problems only (a mask resized to its image, ...).

    Libraries warn about things users cannot act on during a long scoring run (tokenizer forks,
    ...); those are silenced, :class:`~rrsis.errors.DataWarning` is always shown.
    """
    with one_line_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("always", category=DataWarning)
        yield


def add_backend_arg(parser: argparse.ArgumentParser) -> None:
    """``--backend``: PyTorch eager (default) or ONNX Runtime (docs/onnx.md)."""
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="run the network in PyTorch (default) or ONNX Runtime on the CPU: its graph is "
        "exported on first use and cached in the temp dir (needs rrsis[onnx]; docs/onnx.md)",
    )
    parser.add_argument(
        "--onnx",
        default=None,
        metavar="FILE",
        help="with onnxruntime: run this graph written by `rrsis export onnx` for --model "
        "(e.g. an int8 one) instead of exporting it (implies --backend onnxruntime)",
    )


def backend_of(args: argparse.Namespace) -> str:
    """The backend the options ask for: ``--onnx FILE`` implies ``onnxruntime``."""
    return "onnxruntime" if getattr(args, "onnx", None) else getattr(args, "backend", "torch")


def build_segmenter(args: argparse.Namespace, **overrides):
    """The Segmenter of a command's model options (``--model``, ``--device``, ``--threshold``,
    ``--compose``, ``--bf16``, ``--tiling``, ``--window``, ``--backend``, ``--onnx``);
    ``overrides`` win."""
    import torch  # loaded only when a model is needed

    from rrsis.infer.predictor import Segmenter

    kwargs = {
        "device": args.device,
        "threshold": getattr(args, "threshold", None),
        "compose": getattr(args, "compose", "all"),
        "dtype": torch.bfloat16 if getattr(args, "bf16", False) else torch.float32,
        "tiling": getattr(args, "tiling", "auto"),
        "window": getattr(args, "window", None),
        "backend": backend_of(args),
        "onnx": getattr(args, "onnx", None),
        **overrides,
    }
    return Segmenter.from_pretrained(args.model, **kwargs)
