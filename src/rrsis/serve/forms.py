"""Reading a request's form within the limits, and checking its fields before any work.

The body is parsed by Starlette's multipart parser (python-multipart) from a stream that counts
its bytes: a body over ``max_bytes`` is refused from its ``Content-Length`` before it is read, or
as soon as the count passes the limit when it is sent without one. Uploaded files stay in memory
(at most ``max_bytes``), so nothing is written to disk outside the request's temporary folder.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request

from rrsis.errors import ExpressionError, ImageReadError, ModelError, RRSISError
from rrsis.infer.network import clean_expressions
from rrsis.serve.config import Limits


class RequestRefused(RRSISError):
    """A request the server will not work on, with the HTTP status that says why.

    Args:
        message: one line naming the problem.
        status: 400 (malformed), 404 (unknown route or sample), 413 (over a limit), 415 (not a
            form).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def too_large(what: str, size: int, limit: int, unit: str) -> RequestRefused:
    """The 413 answer for ``what`` of ``size`` over ``limit`` (``unit``: "bytes", "pixels")."""
    return RequestRefused(f"{what} is {size:,} {unit}; the limit is {limit:,} {unit}", 413)


@dataclass
class Upload:
    """One uploaded file: the name the client gave and its bytes."""

    filename: str
    data: bytes


@dataclass
class Form:
    """A request's fields (``name -> values`` in order) and its uploaded ``image``."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    image: Upload | None = None

    def values(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def one(self, name: str) -> str | None:
        """The field's value; ``None`` when absent; refused when given twice."""
        values = self.values(name)
        if len(values) > 1:
            raise RequestRefused(f"field {name!r} given {len(values)} times; give it once")
        return values[0] if values else None


class _InMemoryParser(MultiPartParser):
    # The stream is capped at max_bytes, so spooling up to that size never touches the disk.
    def __init__(self, request: Request, stream: AsyncIterator[bytes], limits: Limits) -> None:
        super().__init__(
            request.headers, stream, max_files=1, max_fields=limits.max_expressions + 8
        )
        self.spool_max_size = limits.max_bytes + 1
        self.max_part_size = 64 * 1024


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise too_large("the upload", total, limit, "bytes")
        yield chunk


def safe_name(filename: str | None) -> str:
    """A client's file name reduced to a plain base name (no folders, no odd characters)."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:100]
    return base or "upload"


FORM_HINT = "fields: image (a file) or sample, one or more expression, optional threshold"


async def read_form(request: Request, limits: Limits) -> Form:
    """The request's form, refused over ``limits.max_bytes`` before it is all read.

    A multipart form may carry the image; a URL-encoded one only fields (``sample=...``).

    Raises:
        RequestRefused: not a multipart form (415), too large (413), malformed (400).
    """
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith("application/x-www-form-urlencoded"):
        raise RequestRefused(f"expected a multipart/form-data body ({FORM_HINT})", 415)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_bytes:
        raise too_large("the upload", int(length), limits.max_bytes, "bytes")
    stream = _capped(request.stream(), limits.max_bytes)
    parser = (
        _InMemoryParser(request, stream, limits)
        if multipart
        else FormParser(request.headers, stream)  # fields only (a sample name)
    )
    try:
        data = await parser.parse()
    except MultiPartException as err:
        raise RequestRefused(f"malformed form: {err.message}") from None
    form = Form()
    try:
        for name, value in data.multi_items():
            if isinstance(value, UploadFile):
                if name != "image":
                    raise RequestRefused(f"unexpected file field {name!r} ({FORM_HINT})")
                form.image = Upload(safe_name(value.filename), await value.read())
            else:
                form.fields.setdefault(name, []).append(value)
    finally:
        await data.close()
    return form


def check_expressions(values: list[str], limits: Limits) -> list[str]:
    """The request's expressions, whitespace collapsed, refused when missing, empty or too long.

    Raises:
        ExpressionError: none given, an empty one (the library's wording), too many, too long.
    """
    if not values:
        raise ExpressionError(f"no referring expression given ({FORM_HINT})")
    if len(values) > limits.max_expressions:
        raise ExpressionError(
            f"{len(values)} expressions given; the limit is {limits.max_expressions} per request"
        )
    for value in values:
        if len(value) > limits.max_expression_chars:
            raise ExpressionError(
                f"expression is {len(value):,} characters long; the limit is "
                f"{limits.max_expression_chars}"
            )
    return clean_expressions(values)


def check_threshold(text: str | None) -> float | None:
    """The ``threshold`` field as a number in [0, 1] (the Segmenter's own check), or ``None``."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise ModelError(f"threshold must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ModelError(f"threshold must be in [0, 1], got {value}")
    return value


def sample_path(name: str, samples: dict[str, Path]) -> Path:
    """The bundled sample called ``name``: looked up by name, never joined to a path.

    Raises:
        RequestRefused: 404 for any other name (paths, ``..``, ...).
    """
    if name not in samples:
        known = ", ".join(sorted(samples)) or "none"
        raise RequestRefused(f"unknown sample {name!r} (bundled samples: {known})", 404)
    return samples[name]


def image_source(form: Form) -> tuple[Upload | None, str | None]:
    """The upload or the sample name the form names (exactly one of them).

    Raises:
        RequestRefused: neither or both given.
    """
    sample = form.one("sample")
    if form.image is None and sample is None:
        raise RequestRefused(f"missing field 'image' ({FORM_HINT})")
    if form.image is not None and sample is not None:
        raise RequestRefused("give either an 'image' file or a 'sample' name, not both")
    if form.image is not None and not form.image.data:
        raise ImageReadError("uploaded file is empty", form.image.filename)
    return form.image, sample
