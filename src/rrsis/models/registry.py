"""The model registry: ONE explicit dict of names -> factories (plus tiny test configurations).

``get_model(name, **overrides)`` builds a model and records ``config = {"name", "kwargs"}`` with
every argument resolved, so ``get_model(config["name"], **config["kwargs"])`` rebuilds it.
Baselines add themselves with :func:`register_model` from ``rrsis.models.baselines``, which is
imported the first time the registry is queried.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from rrsis.errors import ModelError
from rrsis.models.base import RRSISModel
from rrsis.models.decoders import LAVTDecoder
from rrsis.models.encoders.presets import (
    TINY_EFFNET_MINILM,
    TINY_SWIN_BERT,
    effnet_minilm_encoders,
    extend_signature,
    swin_bert_encoders,
)
from rrsis.models.fusion import LanguageGate, PixelWordAttention, SpatialPrior
from rrsis.models.lavt import LAVT
from rrsis.models.lgce import LGCE

# Arguments that make a factory read pretrained weights; load_model and `rrsis models` turn
# them off (False for flags, None for paths) so that nothing is read or downloaded.
PRETRAINED_ARGS = ("pretrained", "text_pretrained")


@dataclass
class ModelEntry:
    """A registered model: its factory, the kwargs of its tiny test config and a one-liner."""

    factory: Callable[..., RRSISModel]
    tiny_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _assemble(
    vision: nn.Module,
    text: nn.Module,
    decoder_channels: int,
    convs_per_level: int,
    input_size: int,
    lgce: dict[str, Any] | None,
    separable_decoder: bool = False,
    coord_features: bool = False,
    spatial_prior: int = 0,
    align_corners: bool = False,
) -> LAVT:
    channels = list(vision.out_channels)
    fusions = [PixelWordAttention(c, text.out_dim, coord_features=coord_features) for c in channels]
    gates = [LanguageGate(c) for c in channels]
    neck = None if lgce is None else LGCE(channels, text.out_dim, **lgce)
    decoder = LAVTDecoder(
        channels,
        hidden=decoder_channels,
        convs_per_level=convs_per_level,
        separable=separable_decoder,
        align_corners=align_corners,
    )
    prior = SpatialPrior(text.out_dim, grid=spatial_prior) if spatial_prior else None
    return LAVT(
        vision,
        text,
        fusions,
        gates,
        decoder,
        neck=neck,
        input_size=input_size,
        prior=prior,
        align_corners=align_corners,
    )


def _lgce_kwargs(
    dim: int,
    language_guidance: bool,
    deep_to_shallow: bool,
    shallow_to_deep: bool,
    init_scale: float = 0.0,
) -> dict[str, Any]:
    return {
        "dim": dim,
        "language_guidance": language_guidance,
        "deep_to_shallow": deep_to_shallow,
        "shallow_to_deep": shallow_to_deep,
        "init_scale": init_scale,
    }


def lavt_swin_base(
    decoder_channels: int = 512,
    input_size: int = 480,
    lgce: dict[str, Any] | None = None,
    align_corners: bool = True,
    **encoder_kwargs: Any,
) -> LAVT:
    """LAVT with Swin-B and BERT-base, as in the paper (228 M parameters).

    Args:
        decoder_channels: width of the decoder.
        input_size: default square input side.
        lgce: LGCE keyword arguments; ``None`` means plain LAVT.
        align_corners: bilinear upsampling in the decoder and of the logits as the official LAVT
            code does it (True), so its checkpoints give the same output
            (:mod:`rrsis.models.convert`).
        **encoder_kwargs: :func:`~rrsis.models.encoders.presets.swin_bert_encoders` arguments
            (``pretrained`` local Swin checkpoint, ``text_pretrained`` local BERT, sizes).
    """
    vision, text = swin_bert_encoders(**encoder_kwargs)
    return _assemble(
        vision, text, decoder_channels, 2, input_size, lgce, align_corners=align_corners
    )


def lgce_swin_base(
    lgce_dim: int = 256,
    language_guidance: bool = True,
    deep_to_shallow: bool = True,
    shallow_to_deep: bool = True,
    **kwargs: Any,
) -> LAVT:
    """The paper's model: LAVT (Swin-B + BERT-base) with the LGCE neck. Other kwargs: lavt_swin_base."""
    lgce = _lgce_kwargs(lgce_dim, language_guidance, deep_to_shallow, shallow_to_deep)
    return lavt_swin_base(lgce=lgce, **kwargs)


def lavt_effnet_minilm(
    decoder_channels: int = 64,
    convs_per_level: int = 1,
    separable_decoder: bool = True,
    input_size: int = 512,
    lgce: dict[str, Any] | None = None,
    coord_features: bool = False,
    spatial_prior: int = 0,
    **encoder_kwargs: Any,
) -> LAVT:
    """Fast CPU model: LAVT on EfficientNet-Lite with a frozen MiniLM text encoder.

    Args:
        decoder_channels: width of the decoder.
        convs_per_level: decoder convolutions per pyramid level.
        separable_decoder: depthwise-separable decoder convolutions (keeps the decoder cheap
            at 1/4 resolution: the 512x512 CPU budget is ~100 ms).
        input_size: default square input side.
        lgce: LGCE keyword arguments; ``None`` means plain LAVT.
        coord_features: give every PWAM a learned embedding of pixel coordinates (see
            :class:`~rrsis.models.fusion.PixelWordAttention`); helps position expressions.
        spatial_prior: side of the sentence-conditioned grid of foreground offsets
            (:class:`~rrsis.models.fusion.SpatialPrior`, for position expressions); 0 = off.
        **encoder_kwargs: :func:`~rrsis.models.encoders.presets.effnet_minilm_encoders`
            arguments (``variant``, ``pretrained``, ``text_pretrained``, ``freeze_text``,
            ``text_layers``, ``max_tokens``).
    """
    vision, text = effnet_minilm_encoders(**encoder_kwargs)
    return _assemble(
        vision,
        text,
        decoder_channels,
        convs_per_level,
        input_size,
        lgce,
        separable_decoder,
        coord_features,
        spatial_prior,
    )


def lgce_effnet_minilm(
    lgce_dim: int = 64,
    language_guidance: bool = True,
    deep_to_shallow: bool = True,
    shallow_to_deep: bool = True,
    lgce_init_scale: float = 0.0,
    **kwargs: Any,
) -> LAVT:
    """Fast CPU LGCE model (EfficientNet-Lite + MiniLM). Other kwargs: lavt_effnet_minilm.

    ``lgce_init_scale`` starts LGCE's residual scales above zero (0 = identity at start, as
    for the Swin model); on short CPU schedules zero-initialised scales barely move.
    """
    lgce = _lgce_kwargs(
        lgce_dim, language_guidance, deep_to_shallow, shallow_to_deep, lgce_init_scale
    )
    return lavt_effnet_minilm(lgce=lgce, **kwargs)


extend_signature(lavt_swin_base, swin_bert_encoders)
extend_signature(lavt_effnet_minilm, effnet_minilm_encoders)
extend_signature(lgce_swin_base, lavt_swin_base, exclude=("lgce",))
extend_signature(lgce_effnet_minilm, lavt_effnet_minilm, exclude=("lgce",))


def _lite2(factory: Callable[..., LAVT]) -> Callable[..., LAVT]:
    def build(**kwargs: Any) -> LAVT:
        return factory(**{"variant": "lite2", **kwargs})

    params = [
        p.replace(default="lite2") if p.name == "variant" else p
        for p in inspect.signature(factory).parameters.values()
    ]
    build.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    build.__doc__ = f"{factory.__name__} with EfficientNet-Lite2."
    return build


_TINY_SWIN = {**TINY_SWIN_BERT, "decoder_channels": 16, "input_size": 64}
_TINY_EFFNET = {**TINY_EFFNET_MINILM, "decoder_channels": 16, "input_size": 64}

# THE registry. Baselines add entries through register_model (rrsis.models.baselines).
MODELS: dict[str, ModelEntry] = {
    "lavt_swin_base": ModelEntry(
        lavt_swin_base, _TINY_SWIN, "LAVT, Swin-B + BERT-base (Yang et al. 2022)"
    ),
    "lgce_swin_base": ModelEntry(
        lgce_swin_base, {**_TINY_SWIN, "lgce_dim": 16}, "LAVT + LGCE, Swin-B + BERT-base (paper)"
    ),
    "lavt_effnet_minilm": ModelEntry(
        lavt_effnet_minilm, _TINY_EFFNET, "LAVT, EfficientNet-Lite0 + frozen MiniLM (fast CPU)"
    ),
    "lgce_effnet_minilm": ModelEntry(
        lgce_effnet_minilm,
        {**_TINY_EFFNET, "lgce_dim": 16},
        "LAVT + LGCE, EfficientNet-Lite0 + frozen MiniLM (fast CPU)",
    ),
    "lavt_effnet2_minilm": ModelEntry(
        _lite2(lavt_effnet_minilm), _TINY_EFFNET, "LAVT, EfficientNet-Lite2 + frozen MiniLM"
    ),
    "lgce_effnet2_minilm": ModelEntry(
        _lite2(lgce_effnet_minilm),
        {**_TINY_EFFNET, "lgce_dim": 16},
        "LAVT + LGCE, EfficientNet-Lite2 + frozen MiniLM",
    ),
}

_EXTENSIONS = ("rrsis.models.baselines",)
_extensions_loaded = False


def register_model(
    name: str,
    factory: Callable[..., RRSISModel],
    tiny_kwargs: dict[str, Any] | None = None,
    description: str = "",
) -> None:
    """Add a model to the registry (used by ``rrsis.models.baselines``).

    Args:
        name: registry name; must be new.
        factory: keyword-only-style callable returning an :class:`RRSISModel`.
        tiny_kwargs: kwargs of a tiny, random, offline configuration for tests.
        description: one line for ``rrsis models``.
    """
    if name in MODELS and MODELS[name].factory is not factory:
        raise ModelError(f"model {name!r} is already registered")
    MODELS[name] = ModelEntry(factory, dict(tiny_kwargs or {}), description)


def _load_extensions() -> None:
    global _extensions_loaded
    if _extensions_loaded:
        return
    _extensions_loaded = True
    for module in _EXTENSIONS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _load_extensions()
    return sorted(MODELS)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise :class:`ModelError` listing valid ones."""
    _load_extensions()
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def resolve_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """All factory arguments of ``name`` (defaults updated with ``overrides``), JSON-ready.

    Raises:
        ModelError: unknown model name or unknown keyword argument.
    """
    factory = get_entry(name).factory
    params = {
        p.name: p
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    has_var_kwargs = any(
        p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()
    )
    unknown = sorted(set(overrides) - set(params))
    if unknown and not has_var_kwargs:
        raise ModelError(
            f"unknown argument {unknown[0]!r} for model {name!r}; valid: {', '.join(params)}"
        )
    kwargs = {k: p.default for k, p in params.items() if p.default is not p.empty}
    kwargs.update(overrides)
    return _jsonable(kwargs)


def get_model(name: str, **overrides: Any) -> RRSISModel:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        **overrides: factory keyword arguments.

    Raises:
        ModelError: unknown name or keyword argument (the message lists the valid ones).
    """
    kwargs = resolve_kwargs(name, **overrides)
    try:
        model = get_entry(name).factory(**kwargs)
    except TypeError as err:
        # Factories forwarding **kwargs to another factory reject unknown names only here.
        raise ModelError(f"bad arguments for model {name!r}: {err}") from err
    model.config = {"name": name, "kwargs": kwargs}
    return model


def get_tiny_model(name: str, **overrides: Any) -> RRSISModel:
    """A tiny, randomly initialised, offline version of ``name`` (for tests and examples)."""
    return get_model(name, **{**get_entry(name).tiny_kwargs, **overrides})


def offline_kwargs(name: str, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """``kwargs`` with every pretrained-weights argument switched off (False / None)."""
    resolved = resolve_kwargs(name, **(kwargs or {}))
    for arg in PRETRAINED_ARGS:
        if arg in resolved:
            resolved[arg] = False if isinstance(resolved[arg], bool) else None
    return resolved
