"""Export the part of a model that runs per tile to ONNX, with what a runtime needs to use it.

The graph is the model's forward from **cached word features**: ``(image, words, word_mask) ->
logits``, the image encoder, the language fusion, the LGCE neck and the decoder
(:meth:`rrsis.models.lavt.LAVT.forward_words`). The text encoder stays out of it: it runs once
per expression and its ``(N, C_l)`` word features serve every tile read with that expression,
while a graph with the text encoder inside would run it again for every tile (MiniLM costs about
as much as the shipped model's image encoder at 320 px). A model without ``forward_words`` (the
baselines) is exported whole, ``(image, word_ids, word_mask) -> logits`` (``"in-graph"``).

Graph inputs and outputs (float32, int64 ids and masks; ``B`` dynamic, ``N`` dynamic, ``S`` the
fixed ``input_size``):

==============  ===================  ==================================================
name            shape                meaning
==============  ===================  ==================================================
``image``       ``(B, 3, S, S)``     normalised with the model's mean/std (metadata)
``words``       ``(B, N, C_l)``      the text encoder's word features ("cached")
``word_ids``    ``(B, N)``           token ids ("in-graph" only)
``word_mask``   ``(B, N)``           1 for tokens, 0 for padding
``logits``      ``(B, 2, S, S)``     2-class logits at input resolution
==============  ===================  ==================================================

The model file's ``metadata_props`` carry the rest (keys under ``rrsis.``, see
:func:`export_metadata`): input size, mean/std, threshold, the text encoder and tokenizer, the
known words, the model's name and configuration, and a hash of the exported weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrsis.errors import ModelError
from rrsis.models.io import TEXT_PREFIX, default_threshold

#: How the text reaches the graph: word features computed outside it, or token ids.
TEXT_FEATURES = ("cached", "in-graph")
#: ONNX opset of exports (ONNX Runtime >= 1.14 runs it; 14 is the lowest that works).
DEFAULT_OPSET = 17
#: Prefix of the metadata keys (``metadata_props``) of an exported graph.
META = "rrsis."
#: Version of the graph contract above; a runtime refuses other versions.
FORMAT = "1"
#: Expressions of the two-row example input the graph is traced with.
EXAMPLE_TEXTS = ("the building along the road", "a white car")


@dataclass(frozen=True)
class OnnxExportConfig:
    """What :func:`export_onnx` writes.

    Attributes:
        opset: ONNX opset version.
        text_features: ``"cached"`` (default where the model can) or ``"in-graph"``.
        input_size: square image side of the graph; ``None`` = ``model.input_size``.
        quantize: ``"int8"``: weights of matrix products and convolutions quantised to int8
            with activations quantised on the fly (ONNX Runtime's dynamic quantisation);
            ``None``: float32.
    """

    opset: int = DEFAULT_OPSET
    text_features: str = "cached"
    input_size: int | None = None
    quantize: str | None = None


def can_cache_words(model: nn.Module) -> bool:
    """Whether ``model`` runs from word features (``forward_words`` and a ``text`` encoder)."""
    return callable(getattr(model, "forward_words", None)) and hasattr(model, "text")


def graph_input_names(text_features: str) -> tuple[str, str, str]:
    """The graph's input names for ``text_features`` (see the module docstring)."""
    text = "words" if text_features == "cached" else "word_ids"
    return ("image", text, "word_mask")


def weights_digest(model: nn.Module, text_features: str) -> str:
    """SHA-256 of the weights in the graph (names, dtypes, shapes, values; the text encoder's
    only when it is in the graph): what ties an exported file to the model it came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if text_features == "cached" and name.startswith(TEXT_PREFIX):
            continue
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


class _WordsGraph(nn.Module):
    """``forward_words`` as a module's forward: what the cached-features graph traces."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor):
        return self.model.forward_words(image, words, word_mask)


def resolve_text_features(model: nn.Module, text_features: str | None) -> str:
    """``text_features`` checked against the model (``None``: cached where it can)."""
    if text_features is None:
        return "cached" if can_cache_words(model) else "in-graph"
    if text_features not in TEXT_FEATURES:
        raise ModelError(
            f"text features must be one of {', '.join(TEXT_FEATURES)}, got {text_features!r}"
        )
    if text_features == "cached" and not can_cache_words(model):
        raise ModelError(
            f"model {model.config.get('name', type(model).__name__)!r} cannot run from cached "
            "word features; export it with the text encoder in the graph (in-graph)"
        )
    return text_features


def export_metadata(model: nn.Module, config: OnnxExportConfig, size: int) -> dict[str, str]:
    """The ``rrsis.*`` metadata of a graph exported from ``model`` with ``config``."""
    text = getattr(model, "text", None)
    word_ids, _ = model.tokenize([EXAMPLE_TEXTS[0]])
    vocabulary = getattr(model, "vocabulary", None)
    values: dict[str, Any] = {
        "format": FORMAT,
        "model_name": model.config.get("name", type(model).__name__),
        "model_config": json.dumps(model.config, sort_keys=True, default=str),
        "input_size": size,
        "mean": json.dumps([float(v) for v in model.mean]),
        "std": json.dumps([float(v) for v in model.std]),
        "threshold": default_threshold(model),
        "text_features": config.text_features,
        "text_encoder": type(text).__name__ if text is not None else "",
        "text_dim": getattr(text, "out_dim", ""),
        "max_tokens": word_ids.shape[1],
        "tokenizer": f"{type(text).__module__}.{type(text).__name__}.tokenize"
        if text is not None
        else "",
        "vocabulary": json.dumps(sorted(vocabulary)) if vocabulary else "",
        "weights_sha256": weights_digest(model, config.text_features),
        "opset": config.opset,
        "quantize": config.quantize or "",
    }
    return {META + key: str(value) for key, value in values.items()}


def _example(model: nn.Module, size: int, text_features: str) -> tuple[torch.Tensor, ...]:
    """A two-row example input: a batch of 2 keeps the batch axis from being traced as 1."""
    device = next(model.parameters()).device
    image = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    word_ids, word_mask = model.tokenize(list(EXAMPLE_TEXTS))
    word_ids, word_mask = word_ids.to(device), word_mask.to(device)
    if text_features == "in-graph":
        return image, word_ids, word_mask
    with torch.no_grad():
        words = model.text(word_ids, word_mask)
    return image, words, word_mask


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ModelError("ONNX export needs the onnx package: pip install 'rrsis[onnx]'") from None
    return onnx


def export_onnx(
    model: nn.Module, path: str | Path, config: OnnxExportConfig | None = None
) -> dict[str, str]:
    """Write ``model``'s per-tile graph to ``path`` (see the module docstring).

    Args:
        model: an RRSISModel (in eval mode; put there if not).
        path: the ``.onnx`` file to write (replaced if it exists).
        config: opset, text features, input size, quantisation.

    Returns:
        The ``rrsis.*`` metadata written into the file.

    Raises:
        ModelError: missing ``onnx`` package, an input size the model cannot take, text
            features the model cannot use, or a model the exporter cannot trace.
    """
    config = config or OnnxExportConfig()
    onnx = _import_onnx()
    text_features = resolve_text_features(model, config.text_features)
    config = OnnxExportConfig(config.opset, text_features, config.input_size, config.quantize)
    if config.quantize not in (None, "int8"):
        raise ModelError(f"quantize must be 'int8' or none, got {config.quantize!r}")
    size = int(config.input_size or model.input_size)
    divisor = int(getattr(model, "size_divisor", 1) or 1)
    if size % divisor:
        raise ModelError(f"input size must be a multiple of {divisor}, got {size}")
    was_training = model.training
    model.eval()
    names = graph_input_names(text_features)
    module = _WordsGraph(model) if text_features == "cached" else model
    axes = {"image": {0: "batch"}, "logits": {0: "batch"}, "word_mask": {0: "batch", 1: "tokens"}}
    axes[names[1]] = {0: "batch", 1: "tokens"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # Tracer notes about Python-side shape checks, and the exporter's deprecation note.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                _example(model, size, text_features),
                str(path),
                input_names=list(names),
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=config.opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except ModelError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelError(f"cannot export to ONNX ({type(err).__name__}: {first})") from err
    finally:
        model.train(was_training)
    metadata = export_metadata(model, config, size)
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
    if config.quantize == "int8":
        quantize_int8(path)
    return metadata


def quantize_int8(path: Path) -> None:
    """Replace the float32 graph at ``path`` by ONNX Runtime's dynamic int8 quantisation of it
    (metadata kept)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ModelError("int8 quantisation needs onnxruntime: pip install 'rrsis[onnx]'") from None
    onnx = _import_onnx()
    source = path.with_name(path.stem + ".float32.onnx")
    path.replace(source)
    try:
        # The quantiser logs a note per tensor it leaves in float (the padding's int slices).
        logging.disable(logging.WARNING)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        metadata = {p.key: p.value for p in onnx.load(str(source)).metadata_props}
        graph = onnx.load(str(path))
        del graph.metadata_props[:]
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(path))
    finally:
        source.unlink(missing_ok=True)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``rrsis.*`` metadata of an exported graph, keys without the prefix."""
    onnx = _import_onnx()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: ONNX file not found")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ModelError(f"{path}: not a readable ONNX file ({type(err).__name__})") from err
    return {p.key[len(META) :]: p.value for p in graph.metadata_props if p.key.startswith(META)}
