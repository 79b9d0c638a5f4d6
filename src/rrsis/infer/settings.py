"""The Segmenter's checked settings: how large images are read, and which backend runs the model.

Backends (``Segmenter(backend=...)``, ``--backend`` on the commands): ``"torch"`` (default)
runs the model in PyTorch eager (:class:`~rrsis.infer.network.Network`); ``"onnxruntime"``
runs its per-tile graph in ONNX Runtime on the CPU
(:class:`~rrsis.infer.onnx_backend.OnnxNetwork`, docs/onnx.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rrsis.errors import ModelError
from rrsis.infer.images import MIN_SIDE
from rrsis.infer.network import Network
from rrsis.infer.onnx_backend import OnnxNetwork

TILINGS = ("auto", "always", "never")
#: Window side when a model does not say which image size it was trained on.
DEFAULT_WINDOW = 512
BACKENDS = ("torch", "onnxruntime")


def check_tiling(tiling: str) -> str:
    """``tiling`` if it is one of :data:`TILINGS`, else a one-line :class:`ModelError`."""
    if tiling not in TILINGS:
        raise ModelError(f"tiling must be one of {', '.join(TILINGS)}, got {tiling!r}")
    return tiling


def window_settings(
    model: torch.nn.Module, window: int | None, window_overlap: int
) -> tuple[int, int]:
    """``(window, window_overlap)`` checked; ``window=None``: the model's training image side
    (``model.train_image_size``), else :data:`DEFAULT_WINDOW`."""
    if window is None:
        window = int(getattr(model, "train_image_size", None) or DEFAULT_WINDOW)
    if not 0 <= window_overlap < window or window < MIN_SIDE:
        raise ModelError(
            f"need window >= {MIN_SIDE} and 0 <= window_overlap < window, got "
            f"{window} / {window_overlap}"
        )
    return int(window), int(window_overlap)


def build_network(
    backend: str,
    model: torch.nn.Module,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    fuse: bool = False,
    onnx: str | Path | None = None,
) -> Network:
    """The :class:`Network` of ``backend`` for ``model``.

    ``fuse`` folds batch norms for torch; ONNX Runtime folds them in its own graph
    optimisation, so the torch model is left as it is. ``onnx`` (a graph file) is for the
    ``"onnxruntime"`` backend only.
    """
    if backend not in BACKENDS:
        raise ModelError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnxruntime":
        return OnnxNetwork(model, device, input_size, dtype, onnx=onnx)
    if onnx is not None:
        raise ModelError("an ONNX graph (onnx=) needs backend 'onnxruntime'")
    return Network(model, device, input_size, dtype, fuse)
