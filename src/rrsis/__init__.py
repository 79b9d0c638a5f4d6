"""rrsis: referring remote sensing image segmentation.

Public API:

- :class:`Segmenter` -- segment an image from an English expression.
- :func:`predict_scene` -- a large GeoTIFF scene, window by window, georeferencing kept.
- :func:`predict_images` -- many image files into a folder of masks with a summary.
- :func:`get_model`, :func:`list_models` -- the model registry.
- ``__version__``
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "Segmenter",
    "__version__",
    "get_model",
    "list_models",
    "predict_images",
    "predict_scene",
]


def __getattr__(name: str):
    # Lazy imports keep `import rrsis` (and the CLI's start-up) fast: torch and
    # transformers load only when a model is actually needed.
    if name in ("get_model", "list_models"):
        from rrsis.models import registry

        return getattr(registry, name)
    if name == "Segmenter":
        from rrsis.infer.predictor import Segmenter

        return Segmenter
    if name == "predict_scene":
        from rrsis.infer.scene import predict_scene

        return predict_scene
    if name == "predict_images":
        from rrsis.infer.batch import predict_images

        return predict_images
    raise AttributeError(f"module 'rrsis' has no attribute {name!r}")
