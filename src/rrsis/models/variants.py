"""LAVT and LGCE as factory functions: the paper's Swin-B + BERT models and the fast CPU ones.

Each factory builds the components (encoders, one PWAM and gate per level, optional LGCE neck,
decoder) and passes them ready-built to :class:`~rrsis.models.lavt.LAVT`. The registry
(:mod:`rrsis.models.registry`) lists them by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from rrsis.models.decoders import LAVTDecoder
from rrsis.models.encoders.presets import (
    effnet_minilm_encoders,
    extend_signature,
    swin_bert_encoders,
)
from rrsis.models.fusion import LanguageGate, PixelWordAttention, SpatialPrior
from rrsis.models.lavt import LAVT
from rrsis.models.lgce import LGCE


def assemble_lavt(
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
    """LAVT on ``vision`` and ``text``: one PWAM and gate per level, the decoder, optional LGCE.

    Args:
        vision: the visual encoder (its ``out_channels`` size every level's modules).
        text: the text encoder (``out_dim`` word features).
        decoder_channels: width of the decoder.
        convs_per_level: decoder convolutions per pyramid level.
        input_size: default square input side.
        lgce: :class:`~rrsis.models.lgce.LGCE` keyword arguments; ``None``: no neck.
        separable_decoder: depthwise-separable decoder convolutions.
        coord_features: learned pixel-coordinate embedding in every PWAM.
        spatial_prior: grid side of the sentence-conditioned spatial prior; 0 = off.
        align_corners: bilinear upsampling as the official LAVT code does it.
    """
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


def lgce_kwargs(
    dim: int,
    language_guidance: bool,
    deep_to_shallow: bool,
    shallow_to_deep: bool,
    init_scale: float = 0.0,
) -> dict[str, Any]:
    """The ``lgce`` argument of :func:`assemble_lavt` (LGCE's keyword arguments)."""
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
    return assemble_lavt(
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
    lgce = lgce_kwargs(lgce_dim, language_guidance, deep_to_shallow, shallow_to_deep)
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
    return assemble_lavt(
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
    lgce = lgce_kwargs(
        lgce_dim, language_guidance, deep_to_shallow, shallow_to_deep, lgce_init_scale
    )
    return lavt_effnet_minilm(lgce=lgce, **kwargs)


extend_signature(lavt_swin_base, swin_bert_encoders)
extend_signature(lavt_effnet_minilm, effnet_minilm_encoders)
extend_signature(lgce_swin_base, lavt_swin_base, exclude=("lgce",))
extend_signature(lgce_effnet_minilm, lavt_effnet_minilm, exclude=("lgce",))


def with_effnet_lite2(factory: Callable[..., LAVT]) -> Callable[..., LAVT]:
    """``factory`` with EfficientNet-Lite2 as the default ``variant`` (signature kept)."""

    def build(**kwargs: Any) -> LAVT:
        return factory(**{"variant": "lite2", **kwargs})

    params = [
        p.replace(default="lite2") if p.name == "variant" else p
        for p in inspect.signature(factory).parameters.values()
    ]
    build.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    build.__doc__ = f"{factory.__name__} with EfficientNet-Lite2."
    return build


lavt_effnet2_minilm = with_effnet_lite2(lavt_effnet_minilm)
lgce_effnet2_minilm = with_effnet_lite2(lgce_effnet_minilm)
