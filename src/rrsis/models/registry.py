"""The model registry: ONE explicit dict of names -> factories (plus tiny test configurations).

Every model of the package is listed in :data:`MODELS` below: the LAVT/LGCE variants
(:mod:`rrsis.models.variants`), RMSIN (:mod:`rrsis.models.rmsin`) and the baselines (:mod:`rrsis.models.baselines`).
``get_model(name, **overrides)`` builds a model and records ``config = {"name", "kwargs"}`` with
every argument resolved, so ``get_model(config["name"], **config["kwargs"])`` rebuilds it.
Your own models can be added at runtime with :func:`register_model`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rrsis.errors import ModelError
from rrsis.models.base import RRSISModel
from rrsis.models.baselines.cmsa import cmsa_effnet_minilm, cmsa_swin_base
from rrsis.models.baselines.rrn import rrn_effnet_minilm, rrn_swin_base
from rrsis.models.encoders.presets import TINY_EFFNET_MINILM, TINY_SWIN_BERT
from rrsis.models.rmsin import rmsin_effnet_minilm, rmsin_swin_base
from rrsis.models.variants import (
    lavt_effnet2_minilm,
    lavt_effnet_minilm,
    lavt_swin_base,
    lgce_effnet2_minilm,
    lgce_effnet_minilm,
    lgce_swin_base,
)

# Arguments that make a factory read pretrained weights; load_model and `rrsis models` turn
# them off (False for flags, None for paths) so that nothing is read or downloaded.
PRETRAINED_ARGS = ("pretrained", "text_pretrained")


@dataclass
class ModelEntry:
    """A registered model: its factory, the kwargs of its tiny test config and a one-liner."""

    factory: Callable[..., RRSISModel]
    tiny_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


# Tiny random offline configurations (tests and examples).
_TINY_SWIN = {**TINY_SWIN_BERT, "input_size": 64}
_TINY_EFFNET = {**TINY_EFFNET_MINILM, "input_size": 64}
_TINY_LAVT = {"decoder_channels": 16}
_TINY_LGCE = {**_TINY_LAVT, "lgce_dim": 16}
_TINY_RRN = {"sentence_dim": 16, "fusion_dim": 16, "refine_dim": 8}
_TINY_CMSA = {"key_dim": 8, "value_dim": 16, "key_pool": 2, "skip_dim": 8}
_TINY_RMSIN = {"decoder_channels": 16, "cim_grid": 2}

#: THE registry: every model of the package, by name.
MODELS: dict[str, ModelEntry] = {
    "lavt_swin_base": ModelEntry(
        lavt_swin_base, {**_TINY_SWIN, **_TINY_LAVT}, "LAVT, Swin-B + BERT-base (Yang et al. 2022)"
    ),
    "lgce_swin_base": ModelEntry(
        lgce_swin_base, {**_TINY_SWIN, **_TINY_LGCE}, "LAVT + LGCE, Swin-B + BERT-base (paper)"
    ),
    "lavt_effnet_minilm": ModelEntry(
        lavt_effnet_minilm,
        {**_TINY_EFFNET, **_TINY_LAVT},
        "LAVT, EfficientNet-Lite0 + frozen MiniLM (fast CPU)",
    ),
    "lgce_effnet_minilm": ModelEntry(
        lgce_effnet_minilm,
        {**_TINY_EFFNET, **_TINY_LGCE},
        "LAVT + LGCE, EfficientNet-Lite0 + frozen MiniLM (fast CPU)",
    ),
    "lavt_effnet2_minilm": ModelEntry(
        lavt_effnet2_minilm,
        {**_TINY_EFFNET, **_TINY_LAVT},
        "LAVT, EfficientNet-Lite2 + frozen MiniLM",
    ),
    "lgce_effnet2_minilm": ModelEntry(
        lgce_effnet2_minilm,
        {**_TINY_EFFNET, **_TINY_LGCE},
        "LAVT + LGCE, EfficientNet-Lite2 + frozen MiniLM",
    ),
    "rrn_effnet_minilm": ModelEntry(
        rrn_effnet_minilm,
        {**_TINY_EFFNET, **_TINY_RRN},
        "RRN (Li et al. 2018) + tiling fusion (Hu et al. 2016), EfficientNet-Lite0 + MiniLM",
    ),
    "cmsa_effnet_minilm": ModelEntry(
        cmsa_effnet_minilm,
        {**_TINY_EFFNET, **_TINY_CMSA},
        "CMSA (Ye et al. 2019), EfficientNet-Lite0 + MiniLM",
    ),
    "rrn_swin_base": ModelEntry(
        rrn_swin_base,
        {**_TINY_SWIN, **_TINY_RRN},
        "RRN (Li et al. 2018) + tiling fusion (Hu et al. 2016), Swin-B + BERT-base",
    ),
    "cmsa_swin_base": ModelEntry(
        cmsa_swin_base, {**_TINY_SWIN, **_TINY_CMSA}, "CMSA (Ye et al. 2019), Swin-B + BERT-base"
    ),
    "rmsin_swin_base": ModelEntry(
        rmsin_swin_base,
        {**_TINY_SWIN, **_TINY_RMSIN},
        "RMSIN (Liu et al. 2024), Swin-B + BERT-base, as its official code",
    ),
    "rmsin_effnet_minilm": ModelEntry(
        rmsin_effnet_minilm,
        {**_TINY_EFFNET, **_TINY_RMSIN},
        "RMSIN's modules on EfficientNet-Lite0 + frozen MiniLM (fast CPU)",
    ),
}


def register_model(
    name: str,
    factory: Callable[..., RRSISModel],
    tiny_kwargs: dict[str, Any] | None = None,
    description: str = "",
) -> None:
    """Add your own model to the registry at runtime (the package's models are all in MODELS).

    After ``register_model("my_net", my_net)``, ``get_model("my_net")``, ``load_model`` and
    every ``--model`` option accept it within this Python process.

    Args:
        name: registry name; must be new.
        factory: callable with keyword arguments (defaults recorded in ``model.config``)
            returning an :class:`RRSISModel`.
        tiny_kwargs: kwargs of a tiny, random, offline configuration for tests.
        description: one line for ``rrsis models``.

    Raises:
        ModelError: ``name`` is already registered to another factory.
    """
    if name in MODELS and MODELS[name].factory is not factory:
        raise ModelError(f"model {name!r} is already registered")
    MODELS[name] = ModelEntry(factory, dict(tiny_kwargs or {}), description)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(MODELS)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise :class:`ModelError` listing valid ones."""
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
