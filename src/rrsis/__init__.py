"""rrsis: referring remote sensing image segmentation.

Public API:

- :class:`Segmenter` -- segment an image from an English expression; :meth:`Segmenter.predict`
  returns one :class:`Prediction` per expression (mask, probabilities, what decided it).
- :func:`predict_scene` + :class:`SceneConfig` -- a large GeoTIFF scene, window by window,
  georeferencing kept.
- :func:`predict_images` + :class:`BatchConfig` -- many image files into a folder of masks with a
  summary.
- :func:`get_model`, :func:`list_models` -- the model registry.
- ``__version__``
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "BatchConfig",
    "Prediction",
    "SceneConfig",
    "Segmenter",
    "__version__",
    "get_model",
    "list_models",
    "predict_images",
    "predict_scene",
]

#: Where each public name lives; imported on first use.
_LAZY = {
    "get_model": "rrsis.models.registry",
    "list_models": "rrsis.models.registry",
    "Segmenter": "rrsis.infer.predictor",
    "Prediction": "rrsis.infer.reading",
    "predict_scene": "rrsis.infer.scene",
    "SceneConfig": "rrsis.infer.scene",
    "predict_images": "rrsis.infer.batch",
    "BatchConfig": "rrsis.infer.batch",
}


def __getattr__(name: str):
    # Lazy imports keep `import rrsis` (and the CLI's start-up) fast: torch and
    # transformers load only when a model is actually needed.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rrsis' has no attribute {name!r}")
