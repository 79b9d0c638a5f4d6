"""What a server is started with: the model, where it listens, and what it accepts."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Largest upload in bytes (the whole request body); larger ones are refused while streaming.
MAX_BYTES = 64 * 2**20
#: Largest image in pixels (width x height), read from the file's header before decoding.
MAX_PIXELS = 4096 * 4096
#: Expressions per request.
MAX_EXPRESSIONS = 16
#: Characters per expression (the text encoders read the first 20-40 tokens anyway).
MAX_EXPRESSION_CHARS = 500


@dataclass(frozen=True)
class Limits:
    """What one request may carry; anything over a limit gets a 4xx answer naming it.

    Attributes:
        max_bytes: request body size in bytes (checked against ``Content-Length`` first, then
            counted while the body streams in).
        max_pixels: image width x height, read from the file's header before it is decoded.
        max_expressions: expressions per request.
        max_expression_chars: characters per expression.
    """

    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    max_expressions: int = MAX_EXPRESSIONS
    max_expression_chars: int = MAX_EXPRESSION_CHARS

    def as_dict(self) -> dict[str, int]:
        """The limits as JSON-ready numbers (``GET /api/health`` reports them)."""
        return {
            "max_bytes": self.max_bytes,
            "max_pixels": self.max_pixels,
            "max_expressions": self.max_expressions,
            "max_expression_chars": self.max_expression_chars,
        }


@dataclass(frozen=True)
class ServeConfig:
    """How ``rrsis serve`` runs.

    Attributes:
        model: ``"default"`` (the shipped model), a ``.safetensors`` file or a registry name,
            resolved as every command does (:meth:`~rrsis.infer.predictor.Segmenter.from_pretrained`).
        host: interface to bind; the loopback interface unless asked otherwise.
        port: TCP port.
        device: torch device of the model.
        compose: the composition rules (``"all"``, ``"none"`` or a comma list).
        threshold: foreground probability cut; ``None``: the one stored with the model.
        backend: ``"torch"`` (default) or ``"onnxruntime"`` (docs/onnx.md).
        onnx: with ``"onnxruntime"``, a graph written by ``rrsis export onnx`` for ``model``;
            ``None`` exports one on first use.
        limits: what one request may carry.
    """

    model: str = "default"
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "cpu"
    compose: str = "all"
    threshold: float | None = None
    backend: str = "torch"
    onnx: str | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def url(self) -> str:
        """The page's address (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def segmenter_options(self) -> dict:
        """Keyword arguments for :meth:`~rrsis.infer.predictor.Segmenter.from_pretrained`."""
        return {
            "device": self.device,
            "compose": self.compose,
            "threshold": self.threshold,
            "backend": self.backend,
            "onnx": self.onnx,
        }
