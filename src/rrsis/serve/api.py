"""The JSON API: ``GET /api/health``, ``GET /api/samples``, ``POST /api/image``,
``POST /api/predict`` (fields and answers in ``docs/serve.md``).

Every problem with a request is answered with a 4xx status and ``{"error": "<one line>",
"status": <code>}``, in the wording of the command line's errors; a request's files live in a
temporary folder that is removed when it is answered. Model work runs in a worker thread, so the
server keeps answering while a request is segmented.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from rrsis import __version__
from rrsis.errors import RRSISError
from rrsis.serve.config import Limits
from rrsis.serve.forms import (
    Form,
    RequestRefused,
    check_expressions,
    check_threshold,
    image_source,
    read_form,
    sample_path,
)
from rrsis.serve.images import LoadedImage, load_image
from rrsis.serve.model import SharedSegmenter
from rrsis.serve.results import encode_results

#: Prefix of the per-request temporary folders.
TEMP_PREFIX = "rrsis-serve-"


def error_response(message: str, status: int) -> JSONResponse:
    """The JSON answer for a refused request."""
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _refused(err: RRSISError, folder: str) -> RequestRefused:
    """``err`` as a :class:`RequestRefused`, without the temporary folder in its message."""
    message = str(err).replace(folder + os.sep, "").replace(folder, "")
    return RequestRefused(message, getattr(err, "status", 400))


def _load(form: Form, samples: dict[str, Path], folder: Path, limits: Limits) -> LoadedImage:
    upload, sample = image_source(form)
    return load_image(
        upload if upload is not None else sample_path(sample, samples), folder, limits
    )


def _in_temp_folder(work):
    """Run ``work(folder)`` with a fresh temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as folder:
        try:
            return work(Path(folder))
        except RRSISError as err:
            raise _refused(err, folder) from None


async def health(request: Request) -> JSONResponse:
    state = request.app.state
    model: SharedSegmenter = state.model
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            "model": model.name,
            "threshold": model.segmenter.threshold,
            "compose": sorted(model.segmenter.compose),
            "requests": model.requests,
            "limits": state.config.limits.as_dict(),
        }
    )


async def samples(request: Request) -> JSONResponse:
    table = request.app.state.sample_expressions
    return JSONResponse(
        {"samples": [{"name": name, "expressions": table[name]} for name in sorted(table)]}
    )


async def image(request: Request) -> JSONResponse:
    state = request.app.state
    form = await read_form(request, state.config.limits)

    def work(folder: Path) -> dict:
        return _load(form, state.samples, folder, state.config.limits).view()

    return JSONResponse(await run_in_threadpool(_in_temp_folder, work))


async def predict(request: Request) -> JSONResponse:
    state = request.app.state
    limits: Limits = state.config.limits
    form = await read_form(request, limits)
    image_source(form)  # a missing image is named before the expressions
    expressions = check_expressions(form.values("expression"), limits)
    threshold = check_threshold(form.one("threshold"))
    model: SharedSegmenter = state.model

    def work(folder: Path) -> dict:
        loaded = _load(form, state.samples, folder, limits)
        timed, warnings = model.predict(loaded.array, expressions, threshold)
        return {
            "image": loaded.describe(),
            "threshold": model.segmenter.threshold if threshold is None else threshold,
            "results": encode_results(loaded, timed, folder),
            "warnings": warnings,
        }

    return JSONResponse(await run_in_threadpool(_in_temp_folder, work))
