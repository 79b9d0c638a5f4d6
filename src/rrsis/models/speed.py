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
# Marks this module sets on a model it rewrote in place (read back by is_fused / weights_in_bf16).
_FUSED = "_rrsis_fused"
_MATMUL_BF16 = "_rrsis_matmul_bf16"


def is_fused(model: nn.Module) -> bool:
    """Whether :func:`fuse_for_inference` folded batch norms of ``model`` (then its weights no
    longer fit its registry config: :func:`rrsis.models.io.save_model` refuses it)."""
    return bool(getattr(model, _FUSED, False))


def weights_in_bf16(model: nn.Module) -> bool:
    """Whether :func:`cast_matmul_weights` stored ``model``'s linear/conv weights in bfloat16
    (then it runs with ``dtype="bf16"`` only)."""
    return bool(getattr(model, _MATMUL_BF16, False))


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
    setattr(model, _MATMUL_BF16, True)
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
    if dtype == "fp32" and weights_in_bf16(model):
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


def _parents(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """``id(child) -> [(parent, attribute name), ...]`` for every registered child module."""
    parents: dict[int, list[tuple[nn.Module, str]]] = {}
    for parent in model.modules():
        for name, child in parent.named_children():
            parents.setdefault(id(child), []).append((parent, name))
    return parents


def _conv_bn_pairs(
    model: nn.Module, example: tuple
) -> tuple[list[tuple[nn.Conv2d, nn.Module]], Tensor]:
    """Pairs (conv, batch norm) where the norm reads the very tensor the conv returned.

    Found by running ``example`` once with hooks. A conv or norm called more than once (shared
    modules) is left out: folding must hold for every call.
    """
    produced: dict[int, nn.Conv2d] = {}
    alive: list[Tensor] = []  # keeps outputs alive, so that ids are not reused during the run
    calls: dict[int, int] = {}
    pairs: list[tuple[nn.Conv2d, nn.Module]] = []

    def on_conv(module, args, output):
        calls[id(module)] = calls.get(id(module), 0) + 1
        produced[id(output)] = module
        alive.append(output)

    def on_norm(module, args):
        calls[id(module)] = calls.get(id(module), 0) + 1
        conv = produced.get(id(args[0]))
        if conv is not None:
            pairs.append((conv, module))

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(on_norm))
    try:
        with torch.inference_mode():
            reference = model(*example)
    finally:
        for handle in handles:
            handle.remove()
    pairs = [
        (conv, norm)
        for conv, norm in pairs
        if calls[id(conv)] == 1
        and calls[id(norm)] == 1
        and norm.running_mean is not None
        and norm.running_var is not None
    ]
    return pairs, reference


@torch.no_grad()
def fuse_for_inference(model: nn.Module, example: tuple, rtol: float = 1e-3) -> dict[str, int]:
    """Fold eval-mode batch norms into the convolutions that feed them, in place.

    An eval-mode ``BatchNorm2d`` is a per-channel affine map, so ``bn(conv(x))`` equals one
    convolution with rescaled weights and a bias. On CPUs the norms cost about a fifth of the
    default model's forward; folding removes them (they are replaced by ``nn.Identity``).
    ``ReLU``/``ReLU6`` modules are also set to run in place (another ~4 %).

    Pairs are found by running ``example`` through the model with hooks (a norm whose input
    is the very tensor a conv returned). The model then runs ``example`` again, and everything
    is undone unless the output agrees with the first run to float rounding (``rtol`` of the
    output's largest magnitude), so a conv whose output is also read elsewhere cannot be folded
    silently. The model can no longer be trained as before (its norms are gone): use it for
    inference only, or reload it.

    Args:
        model: a module in eval mode.
        example: positional inputs for one forward, e.g. ``(image, word_ids, word_mask)``.
        rtol: tolerance of the check, relative to the largest output magnitude.

    Returns:
        counts of what was rewritten: ``{"batch_norms", "activations"}`` (all 0 if
        nothing could be, or if the check failed and everything was undone).

    Raises:
        ModelError: the model is in training mode.
    """
    if model.training:
        raise ModelError("fuse_for_inference needs a model in eval mode")
    pairs, reference = _conv_bn_pairs(model, example)
    parents = _parents(model)
    counts = {"batch_norms": 0, "activations": 0}
    undo: list[tuple[object, str, object]] = []  # (owner, attribute, old value)

    def assign(owner: object, name: str, value: object) -> None:
        undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    for conv, norm in pairs:
        scale = norm.running_var.add(norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        bias = shift if conv.bias is None else conv.bias * scale + shift
        weight = conv.weight * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
        weight = weight.contiguous(memory_format=_memory_format(conv.weight))
        assign(conv, "weight", nn.Parameter(weight, requires_grad=False))
        assign(conv, "bias", nn.Parameter(bias.to(weight.dtype), requires_grad=False))
        for parent, name in parents.get(id(norm), []):
            assign(parent, name, nn.Identity())
        counts["batch_norms"] += 1
    for module in model.modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6)) and not module.inplace:
            assign(module, "inplace", True)
            counts["activations"] += 1
    if not undo:
        return counts
    try:
        with torch.inference_mode():
            fused = model(*example)
        largest = float(reference.abs().max()) or 1.0
        same = fused.shape == reference.shape
        same = same and float((fused - reference).abs().max()) <= rtol * largest
    except Exception:  # a rewrite the model's code did not expect: keep the model as it was
        same = False
    if not same:
        for owner, name, value in reversed(undo):
            setattr(owner, name, value)
        return dict.fromkeys(counts, 0)
    if counts["batch_norms"]:
        setattr(model, _FUSED, True)  # save_model refuses it: the weights no longer fit the config
    return counts


def _memory_format(tensor: Tensor) -> torch.memory_format:
    if tensor.ndim == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
