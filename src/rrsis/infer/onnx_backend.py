"""The ONNX Runtime backend: the per-tile graph runs in ONNX Runtime, the rest as with torch.

:class:`OnnxNetwork` is a :class:`~rrsis.infer.network.Network` whose forward runs the graph of
:mod:`rrsis.models.onnx_export` on ONNX Runtime's CPU provider, with as many intra-op threads
as torch uses (``torch.set_num_threads``). Tokenising and the text encoder stay in torch: each
expression's word features are computed once and kept (:attr:`OnnxNetwork.words_cache` holds
the last :data:`WORDS_CACHE` expressions), so a scene's thousands of tiles run the text encoder
once. Normalising, resizing the probabilities and the composition rules are shared with the
torch backend, so both give the same masks up to the graph's float rounding.

Where the graph comes from: a file written by ``rrsis export onnx`` (``onnx=PATH``; its
recorded weights hash must match the model), or an export of the model made on first use and
kept in ``<temp dir>/rrsis-onnx/`` under a name derived from the weights hash, input size,
opset and torch version, so later runs reuse it.

``onnxruntime`` is imported only here, when such a network is built.
"""

from __future__ import annotations

import json
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from rrsis.errors import ModelError
from rrsis.infer.network import Network, forward_rows
from rrsis.models.io import write_whole
from rrsis.models.onnx_export import (
    DEFAULT_OPSET,
    FORMAT,
    META,
    OnnxExportConfig,
    export_onnx,
    graph_input_names,
    resolve_text_features,
    weights_digest,
)

#: Word features of this many expressions are kept between forwards.
WORDS_CACHE = 256
#: ONNX Runtime graph optimisation levels by name.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def import_onnxruntime():
    """``onnxruntime``, or a one-line :class:`ModelError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            "backend 'onnxruntime' needs the onnxruntime package: pip install 'rrsis[onnx]'"
        ) from None
    return onnxruntime


def cache_dir() -> Path:
    """Where graphs exported on first use are kept: ``<temp dir>/rrsis-onnx``."""
    return Path(tempfile.gettempdir()) / "rrsis-onnx"


def cached_graph(
    model: torch.nn.Module, input_size: int, text_features: str, opset: int = DEFAULT_OPSET
) -> Path:
    """The graph of ``model`` at ``input_size`` in :func:`cache_dir`, exported if absent."""
    digest = weights_digest(model, text_features)
    name = str(model.config.get("name", type(model).__name__))
    torch_version = torch.__version__.split("+")[0]
    key = f"{name}-{digest[:16]}-{input_size}-{text_features}-op{opset}-torch{torch_version}"
    path = cache_dir() / f"{key}.onnx"
    if not path.is_file():
        config = OnnxExportConfig(opset, text_features, input_size)
        # Exported next to the cache and published whole: concurrent runs never read half a file.
        write_whole(path, lambda tmp: export_onnx(model, tmp, config), overwrite=True)
    return path


def session_options(ort, threads: int | None = None, optimization: str = "all"):
    """ONNX Runtime session options: ``threads`` intra-op threads (``None``: torch's count),
    one inter-op thread, sequential execution, no spinning, the named graph optimisation level."""
    if optimization not in OPTIMIZATION_LEVELS:
        raise ModelError(
            f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, got {optimization!r}"
        )
    levels = ort.GraphOptimizationLevel
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle workers sleep instead of spinning: between forwards the same cores read, resize and
    # write tiles (and torch encodes new expressions).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = {
        "disable": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        "all": levels.ORT_ENABLE_ALL,
    }[optimization]
    return options


def open_session(ort, path: Path, options):
    """An ONNX Runtime CPU session of the graph at ``path`` (one-line errors)."""
    if not path.is_file():
        raise ModelError(f"{path}: ONNX file not found")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ModelError(f"{path}: ONNX Runtime cannot load it ({type(err).__name__})") from err


def graph_metadata(session) -> dict[str, str]:
    """The ``rrsis.*`` metadata of a session's graph, keys without the prefix."""
    items = session.get_modelmeta().custom_metadata_map.items()
    return {key[len(META) :]: value for key, value in items if key.startswith(META)}


class OnnxNetwork(Network):
    """A :class:`Network` whose model forward runs an ONNX graph in ONNX Runtime (CPU).

    Args:
        model: the torch model: its tokenizer and text encoder run in torch, its graph is
            exported from it (or checked against ``onnx``).
        device: must be the CPU (the CPU execution provider).
        input_size: square side of the graph; ``None`` uses ``model.input_size``.
        dtype: ``torch.float32`` only.
        onnx: a graph written by :func:`~rrsis.models.onnx_export.export_onnx` for this model;
            ``None``: the cached export (:func:`cached_graph`).
        threads: ONNX Runtime intra-op threads; ``None``: ``torch.get_num_threads()``.
        optimization: ONNX Runtime graph optimisation level (``"all"`` by default).

    Raises:
        ModelError: onnxruntime missing, a non-CPU device, bfloat16, or a graph that does not
            belong to the model (other weights, input size or format).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        input_size: int | None = None,
        dtype: torch.dtype = torch.float32,
        onnx: str | Path | None = None,
        threads: int | None = None,
        optimization: str = "all",
    ) -> None:
        ort = import_onnxruntime()
        if torch.device(device).type != "cpu":
            raise ModelError(f"backend 'onnxruntime' runs on the CPU, got device {device}")
        if dtype != torch.float32:
            raise ModelError("backend 'onnxruntime' runs float32; bfloat16 is a torch option")
        options = session_options(ort, threads, optimization)
        if onnx is None:
            super().__init__(model, device, input_size, dtype, fuse=False)
            text_features = resolve_text_features(self.model, None)
            path = cached_graph(self.model, self.input_size, text_features)
            self.session = open_session(ort, path, options)
        else:
            path = Path(onnx)
            self.session = open_session(ort, path, options)
            meta = graph_metadata(self.session)
            # The graph's own side unless the caller asks for another (refused below).
            size = input_size if input_size is not None else int(meta.get("input_size") or 0)
            super().__init__(model, device, size or None, dtype, fuse=False)
        self.path = path
        meta = graph_metadata(self.session)
        self.metadata = meta
        self._check(meta, path)
        self.text_features = meta["text_features"]
        self.input_names = graph_input_names(self.text_features)
        #: Word features by token ids: ``{(ids, mask) bytes: float32 (N, C_l)}``, newest last.
        self.words_cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def _check(self, meta: dict[str, str], path: Path) -> None:
        """Refuse a graph made for another model, size or format (one line naming it)."""
        if meta.get("format") != FORMAT:
            raise ModelError(
                f"{path}: not an rrsis ONNX graph of format {FORMAT} (export it with "
                "rrsis export onnx)"
            )
        size = int(meta.get("input_size", 0))
        if size != self.input_size:
            raise ModelError(
                f"{path}: graph takes {size} px images, the Segmenter {self.input_size} px"
            )
        if meta.get("weights_sha256") != weights_digest(self.model, meta["text_features"]):
            raise ModelError(f"{path}: exported from other weights than this model")
        if meta.get("mean") and json.loads(meta["mean"]) != [float(v) for v in self.model.mean]:
            raise ModelError(f"{path}: graph normalises with another mean than this model")

    def words(self, word_ids: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """Word features ``float32 (R, N, C_l)`` of ``R`` token rows, each expression encoded
        once (kept for the next calls, :data:`WORDS_CACHE` expressions at most)."""
        ids, mask = word_ids.cpu().numpy(), word_mask.cpu().numpy()
        keys = [ids[r].tobytes() + mask[r].tobytes() for r in range(len(ids))]
        missing = list(dict.fromkeys(k for k in keys if k not in self.words_cache))
        if missing:
            rows = [keys.index(k) for k in missing]
            with torch.inference_mode():
                new = self.model.text(word_ids[rows], word_mask[rows]).float().cpu()
            for key, value in zip(missing, new):
                self.words_cache[key] = value
        for key in keys:
            self.words_cache.move_to_end(key)
        while len(self.words_cache) > WORDS_CACHE:
            self.words_cache.popitem(last=False)
        return torch.stack([self.words_cache[k] for k in keys])

    def run_graph(
        self, images: torch.Tensor, word_ids: torch.Tensor, word_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``(R, 2, S, S)`` of the graph for ``R`` rows (the model contract's forward)."""
        text = self.words(word_ids, word_mask) if self.text_features == "cached" else word_ids
        feeds = {
            name: np.ascontiguousarray(tensor.cpu().numpy())
            for name, tensor in zip(self.input_names, (images.float(), text, word_mask))
        }
        (logits,) = self.session.run(["logits"], feeds)
        return torch.from_numpy(logits)

    def forward(self, images, word_ids, word_mask, size: tuple[int, int]) -> np.ndarray:
        """:func:`~rrsis.infer.network.forward_rows` with the graph as the model."""
        return forward_rows(self.run_graph, images, word_ids, word_mask, size, self.max_rows)


def compare_with_torch(
    model: torch.nn.Module, path: str | Path, expression: str = "the building along the road"
) -> tuple[float, float]:
    """Run the graph at ``path`` and ``model`` in PyTorch on one random image.

    Returns:
        The largest absolute difference of their logits, and the fraction of pixels whose
        arg-max class agrees.
    """
    network = OnnxNetwork(model, onnx=path)
    size = network.input_size
    generator = torch.Generator().manual_seed(0)
    tiles = torch.randint(0, 256, (1, size, size, 3), generator=generator, dtype=torch.uint8)
    images = network.normalise(tiles.numpy())
    word_ids, word_mask = network.tokenize([expression])
    with torch.inference_mode():
        expected = network.model(images, word_ids, word_mask).float()
        got = network.run_graph(images, word_ids, word_mask)
    agree = (expected.argmax(1) == got.argmax(1)).float().mean()
    return float((expected - got).abs().max()), float(agree)
