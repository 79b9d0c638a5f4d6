"""The server's one model: a Segmenter that one request at a time reaches."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence

import numpy as np

from rrsis.infer.predictor import Segmenter
from rrsis.infer.reading import Prediction


class SharedSegmenter:
    """One :class:`~rrsis.infer.predictor.Segmenter`, loaded once, shared by every request.

    Requests are answered concurrently (decoding, encoding and polygons run in parallel), but
    the model is reached under a lock: its forwards, and a request's own threshold, never mix
    with another request's.

    Args:
        segmenter: the one inference path.
        name: what ``--model`` named (reported by ``GET /api/health``).
    """

    def __init__(self, segmenter: Segmenter, name: str) -> None:
        self.segmenter = segmenter
        self.name = name
        self.lock = threading.Lock()
        self.requests = 0

    def predict(
        self, image: np.ndarray, expressions: Sequence[str], threshold: float | None = None
    ) -> tuple[list[tuple[Prediction, float]], list[str]]:
        """Each expression through :meth:`Segmenter.predict`, with its own time in seconds.

        Args:
            image: ``uint8 (H, W, 3)``.
            expressions: checked expressions.
            threshold: this request's foreground cut; ``None``: the model's.

        Returns:
            ``(prediction, seconds)`` per expression, and the distinct warnings raised (one
            line each: unknown words, non-Latin characters, ...).
        """
        segmenter = self.segmenter
        with self.lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            default = segmenter.threshold
            if threshold is not None:
                segmenter.threshold = threshold  # read by predict() for masks and rules
            try:
                results = []
                for expression in expressions:
                    start = time.perf_counter()
                    prediction = segmenter.predict(image, expression)[0]
                    results.append((prediction, time.perf_counter() - start))
            finally:
                segmenter.threshold = default
            self.requests += 1
        lines = [
            str(item.message).splitlines()[0]
            for item in caught
            if issubclass(item.category, UserWarning) and str(item.message)
        ]
        return results, list(dict.fromkeys(lines))
