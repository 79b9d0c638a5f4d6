"""The shipped default model: ``default.safetensors`` and its model card data ``default.json``."""

from __future__ import annotations

from pathlib import Path

#: The name that means the shipped model wherever a command or function takes a model.
DEFAULT_MODEL = "default"


def default_weights_path() -> Path:
    """Where the shipped default model lives (``rrsis/weights/default.safetensors``)."""
    return Path(__file__).resolve().parent / "default.safetensors"
