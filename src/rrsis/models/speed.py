"""Fast inference helpers: channels-last memory, ``torch.inference_mode`` and opt-in bfloat16.

``inference_mode(model, dtype="bf16")`` runs the model under CPU/GPU autocast to bfloat16: the
matrix products (most of a Swin/LAVT forward) run at twice the fp32 rate on CPUs with AVX-512
bf16/AMX, while normalisations and softmax stay in fp32 (autocast keeps them there). Masks agree
with fp32 on almost every pixel (checked by the tests and reported by ``benchmarks/``), but
logits are not bit-identical, so fp32 stays the default.

Example:
    >>> with inference_mode(model, dtype="bf16") as fast:
    ...     logits = fast(channels_last(image), word_ids, word_mask).float()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from rrsis.errors import ModelError

DTYPES = ("fp32", "bf16")


def bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (AVX-512 bf16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def channels_last(image: Tensor) -> Tensor:
    """``(B, 3, H, W)`` image in channels-last memory (a no-op if it already is).

    Swin's blocks and convolutions read NHWC, so this saves a transpose per layer boundary.
    """
    return image.contiguous(memory_format=torch.channels_last)


_MATMUL_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def cast_matmul_weights(model: nn.Module) -> nn.Module:
    """Store the weights of linear and conv layers in bfloat16, in place (one way).

    Autocast otherwise re-casts every weight on every forward: for Swin-B + BERT that is
    ~200 M values read and written per image. Results are identical to plain bf16 autocast
    (autocast would make the same casts); norms, embeddings and everything else stay fp32. The
    model can then only run with ``dtype="bf16"``; reload it for fp32.

    Returns:
        ``model``.
    """
    for module in model.modules():
        if isinstance(module, _MATMUL_LAYERS):
            module.to(torch.bfloat16)
    model._rrsis_matmul_bf16 = True
    return model


def _device_type(model: nn.Module) -> str:
    for tensor in model.parameters():
        return tensor.device.type
    return "cpu"


@contextmanager
def inference_mode(
    model: nn.Module,
    dtype: str = "fp32",
    use_channels_last: bool = True,
    cast_weights: bool = False,
) -> Iterator[nn.Module]:
    """Context in which ``model`` runs for inference as fast as it can.

    Puts the model in eval mode (restored on exit), converts its 4-d weights to channels-last
    (kept: it changes memory layout, not results), disables autograd with
    ``torch.inference_mode`` and, for ``dtype="bf16"``, enables bfloat16 autocast.

    Args:
        model: any ``nn.Module`` (an ``RRSISModel`` or an encoder).
        dtype: ``"fp32"`` (default, exact) or ``"bf16"`` (faster; outputs are bfloat16 where
            the last op is a matrix product: call ``.float()`` on them).
        use_channels_last: convert conv weights to channels-last.
        cast_weights: with ``dtype="bf16"``, keep linear/conv weights in bf16 from now on
            (:func:`cast_matmul_weights`): faster, less memory, but one way.

    Yields:
        the model itself.

    Raises:
        ModelError: unknown ``dtype``, or fp32 asked of a model whose weights were cast.
    """
    if dtype not in DTYPES:
        raise ModelError(f"inference dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "fp32" and getattr(model, "_rrsis_matmul_bf16", False):
        raise ModelError("this model's weights were cast to bf16; reload it to run in fp32")
    if cast_weights and dtype == "bf16":
        cast_matmul_weights(model)
    was_training = model.training
    model.eval()
    if use_channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        with (
            torch.inference_mode(),
            torch.autocast(_device_type(model), dtype=torch.bfloat16, enabled=dtype == "bf16"),
        ):
            yield model
    finally:
        model.train(was_training)


def predict_logits(
    model: nn.Module,
    image: Tensor,
    word_ids: Tensor,
    word_mask: Tensor,
    dtype: str = "fp32",
    cast_weights: bool = False,
) -> Tensor:
    """One fast forward of an RRSIS model.

    Args:
        model: an ``RRSISModel``.
        image: ``(B, 3, H, W)`` normalised float.
        word_ids: ``(B, N)`` long.
        word_mask: ``(B, N)`` long.
        dtype: ``"fp32"`` or ``"bf16"``.
        cast_weights: see :func:`inference_mode`.

    Returns:
        float32 logits ``(B, 2, H, W)``.
    """
    with inference_mode(model, dtype=dtype, cast_weights=cast_weights) as fast:
        return fast(channels_last(image), word_ids, word_mask).float()


def mask_agreement(logits_a: Tensor, logits_b: Tensor) -> float:
    """Fraction of pixels whose predicted class (argmax over dim 1) is the same.

    Args:
        logits_a: ``(B, K, H, W)``.
        logits_b: ``(B, K, H, W)``.

    Returns:
        agreement in [0, 1].
    """
    if logits_a.shape != logits_b.shape:
        raise ModelError(
            f"logits shapes differ: {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}"
        )
    same = logits_a.argmax(dim=1) == logits_b.argmax(dim=1)
    return same.float().mean().item()
