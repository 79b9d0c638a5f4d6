"""The ONNX Runtime backend: the per-tile graph runs in ONNX Runtime, the rest as with torch.

:class:`OnnxNetwork` is a :class:`~rrsis.infer.network.Network` whose forward runs the graph of
:mod:`rrsis.models.onnx_export` on ONNX Runtime's CPU provider, with as many intra-op threads
as torch uses (``torch.set_num_threads``). Tokenising and the text encoder stay in torch: each
expression's word features are computed once and kept (:attr:`OnnxNetwork.words_cache` holds
the last :data:`WORDS_CACHE` expressions), so a scene's thousands of tiles run the text encoder
once. Normalising, resizing the probabilities and the composition rules are shared with the
torch backend, so both give the same masks up to the graph's float rounding.

The graph's batch axis is dynamic, but each batch size runs in a session of its own with that
axis fixed (ONNX Runtime's free dimension override): the shape arithmetic of the graph is then
constant and folded away when the session is built, about 1 ms of a 20 ms forward on the shipped
model. Sessions are opened on first use of a batch size; past :data:`FIXED_SESSIONS` sizes, the
others share one session with the axis left dynamic (each session keeps its own memory arena).

Where the graph comes from: a file written by ``rrsis export onnx`` (``onnx=PATH``; its
recorded weights hash must match the model), or an export of the model made on first use and
kept in ``<temp dir>/rrsis-onnx/`` under a name derived from the weights hash, the model
code's hash, input size, opset and torch version, so later runs reuse it.

``onnxruntime`` is imported only here, when such a network is built.
"""

from __future__ import annotations

import hashlib
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
#: Batch sizes that get a session of their own (see the module docstring).
FIXED_SESSIONS = 4
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


def models_code_digest() -> str:
    """SHA-256 of the source of :mod:`rrsis.models`: a cached graph traced from other model
    code (same weights) is not reused."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1] / "models"
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cached_graph(
    model: torch.nn.Module, input_size: int, text_features: str, opset: int = DEFAULT_OPSET
) -> Path:
    """The graph of ``model`` at ``input_size`` in :func:`cache_dir`, exported if absent."""
    digest = weights_digest(model, text_features)
    code = models_code_digest()
    name = str(model.config.get("name", type(model).__name__))
    torch_version = torch.__version__.split("+")[0]
    key = (
        f"{name}-{digest[:16]}-{code[:8]}-{input_size}-{text_features}-op{opset}"
        f"-torch{torch_version}"
    )
    path = cache_dir() / f"{key}.onnx"
    if not path.is_file():
        config = OnnxExportConfig(opset, text_features, input_size)
        # Exported next to the cache and published whole: concurrent runs never read half a file.
        write_whole(path, lambda tmp: export_onnx(model, tmp, config), overwrite=True)
    return path


def session_options(
    ort, threads: int | None = None, optimization: str = "all", batch: int | None = None
):
    """ONNX Runtime session options: ``threads`` intra-op threads (``None``: torch's count),
    one inter-op thread, sequential execution, no spinning, the named graph optimisation level;
    ``batch``: the graph's ``batch`` axis fixed at that size."""
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
    if batch is not None:
        options.add_free_dimension_override_by_name("batch", int(batch))
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
        self.ort = ort
        self.threads, self.optimization = threads, optimization
        options = session_options(ort, threads, optimization, batch=1)
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
        #: Sessions by batch size, the axis fixed (:attr:`session` is batch 1); ``None``: the
        #: session with a dynamic batch axis, for sizes past :data:`FIXED_SESSIONS`.
        self.sessions: dict[int | None, object] = {1: self.session}

    def session_for(self, batch: int):
        """The session for ``batch`` rows: its own, fixed at that size, opened on first use,
        or past :data:`FIXED_SESSIONS` sizes the shared dynamic one."""
        session = self.sessions.get(batch)
        if session is not None:
            return session
        fixed = sum(key is not None for key in self.sessions)
        key = batch if fixed < FIXED_SESSIONS else None
        if key not in self.sessions:
            options = session_options(self.ort, self.threads, self.optimization, batch=key)
            self.sessions[key] = open_session(self.ort, self.path, options)
        return self.sessions[key]

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
        (logits,) = self.session_for(images.shape[0]).run(["logits"], feeds)
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
