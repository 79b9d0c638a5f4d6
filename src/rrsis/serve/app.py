"""The Starlette application of ``rrsis serve``, and the function that runs it with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rrsis.errors import RRSISError
from rrsis.infer.demo import SAMPLES_DIR, sample_images
from rrsis.infer.predictor import Segmenter
from rrsis.serve import api
from rrsis.serve.config import ServeConfig
from rrsis.serve.forms import RequestRefused
from rrsis.serve.model import SharedSegmenter

STATIC_DIR = Path(__file__).resolve().parent / "static"
log = logging.getLogger("rrsis.serve")


async def _index(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 404:
        message = f"not found: {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed for {request.url.path}"
    else:
        message = str(exc.detail)
    return api.error_response(message, exc.status_code)


async def _refused(request: Request, exc: RequestRefused) -> JSONResponse:
    return api.error_response(str(exc), exc.status)


async def _user_error(request: Request, exc: RRSISError) -> JSONResponse:
    return api.error_response(str(exc), 400)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return api.error_response(f"internal error ({type(exc).__name__}); see the server's log", 500)


def build_app(
    config: ServeConfig | None = None,
    segmenter: Segmenter | None = None,
    samples_dir: Path | None = None,
) -> Starlette:
    """The web app: the page, its static files and the JSON API around one Segmenter.

    Args:
        config: the server's settings; the model named there is loaded unless ``segmenter``
            is given.
        segmenter: an already built Segmenter (tests, or a caller that holds one).
        samples_dir: the folder of selectable sample images (default: the bundled samples).
    """
    config = config or ServeConfig()
    if segmenter is None:
        segmenter = Segmenter.from_pretrained(config.model, **config.segmenter_options())
    samples = sample_images(SAMPLES_DIR if samples_dir is None else samples_dir)
    app = Starlette(
        routes=[
            Route("/", _index),
            Route("/api/health", api.health),
            Route("/api/samples", api.samples),
            Route("/api/image", api.image, methods=["POST"]),
            Route("/api/predict", api.predict, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        exception_handlers={
            HTTPException: _http_error,
            RequestRefused: _refused,
            RRSISError: _user_error,
            Exception: _server_error,
        },
    )
    app.state.config = config
    app.state.model = SharedSegmenter(segmenter, config.model)
    app.state.samples = {path.name: path for path, _ in samples}
    app.state.sample_expressions = {path.name: expressions for path, expressions in samples}
    return app


def serve(config: ServeConfig, echo=print) -> None:
    """Load the model, print the page's address and serve until interrupted."""
    import uvicorn

    app = build_app(config)
    echo(f"rrsis serve: {config.url} (model {config.model}; Ctrl+C stops)")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
