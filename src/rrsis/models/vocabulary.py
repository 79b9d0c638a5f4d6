"""A model's vocabulary (:mod:`rrsis.data.known_words`) stored with its weights.

``save_model`` writes ``model.vocabulary`` into the safetensors metadata under
:data:`VOCABULARY_KEY`; ``load_model`` sets ``model.vocabulary`` from that key or, for the
shipped model, from the ``vocabulary`` list of ``<weights>.json`` beside the weights. A model
without one has no ``vocabulary`` attribute and nothing is checked against it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

VOCABULARY_KEY = "rrsis_vocabulary"


def vocabulary_metadata(model: torch.nn.Module) -> dict[str, str]:
    """``{VOCABULARY_KEY: json}`` for a model with a ``vocabulary``, else ``{}``."""
    vocabulary = getattr(model, "vocabulary", None)
    return {VOCABULARY_KEY: json.dumps(sorted(vocabulary))} if vocabulary else {}


def _from_safetensors(path: Path) -> list | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads((handle.metadata() or {}).get(VOCABULARY_KEY, "null"))
    except Exception:  # not a safetensors file, or a damaged key: no vocabulary
        return None


def _from_json(path: Path) -> list | None:
    try:
        return json.loads(path.read_text()).get("vocabulary")
    except (OSError, ValueError, AttributeError):
        return None


def attach_vocabulary(model: torch.nn.Module, path: Path) -> None:
    """Set ``model.vocabulary`` (a frozenset of words) from ``path``'s metadata or JSON."""
    stored = _from_safetensors(path) if path.suffix.lower() == ".safetensors" else None
    if stored is None and path.with_suffix(".json").is_file():
        stored = _from_json(path.with_suffix(".json"))
    if isinstance(stored, list) and stored:
        model.vocabulary = frozenset(str(word) for word in stored)
