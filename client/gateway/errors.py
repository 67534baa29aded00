"""The gateway's closed set of error kinds, the one table from kind to HTTP status, and the one renderer.

Every failure, whether raised by validation, auth, the body limit, the service or Triton, ends up as a
`GatewayError` and leaves through `render`, so clients always see OpenAI's
`{"error": {"message", "type", "param", "code"}}` body, or on TEI's own routes (`TEI_PATHS`) TEI's
`{"error": message, "error_type": kind}`, with the same status either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import orjson
from starlette.responses import Response


class ErrorKind(str, Enum):
    """Why a request failed; the value is the `reason` label in metrics."""

    VALIDATION = "validation"
    UNAUTHENTICATED = "unauthenticated"
    MODEL_NOT_FOUND = "model_not_found"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    OVERLOADED = "overloaded"
    BACKEND = "backend"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    CLIENT_CLOSED = "client_closed"


@dataclass(frozen=True)
class ErrorSpec:
    """How one kind looks on the wire: status code, OpenAI error `type` and `code`."""

    status: int
    type: str
    code: str
    tei_type: str = "Validation"  # text-embeddings-inference's `error_type`


ERROR_TABLE: dict[ErrorKind, ErrorSpec] = {
    ErrorKind.VALIDATION: ErrorSpec(400, "invalid_request_error", "invalid_value"),
    ErrorKind.UNAUTHENTICATED: ErrorSpec(401, "authentication_error", "invalid_api_key", "Unauthorized"),
    ErrorKind.MODEL_NOT_FOUND: ErrorSpec(404, "invalid_request_error", "model_not_found", "NotFound"),
    ErrorKind.NOT_FOUND: ErrorSpec(404, "invalid_request_error", "not_found", "NotFound"),
    ErrorKind.METHOD_NOT_ALLOWED: ErrorSpec(405, "invalid_request_error", "method_not_allowed"),
    ErrorKind.PAYLOAD_TOO_LARGE: ErrorSpec(413, "invalid_request_error", "payload_too_large"),
    ErrorKind.OVERLOADED: ErrorSpec(429, "rate_limit_error", "rate_limit_exceeded", "Overloaded"),
    ErrorKind.BACKEND: ErrorSpec(500, "server_error", "backend_error", "Backend"),
    ErrorKind.UNAVAILABLE: ErrorSpec(503, "server_error", "service_unavailable", "Unhealthy"),
    ErrorKind.TIMEOUT: ErrorSpec(504, "server_error", "timeout", "Backend"),
    # nginx's code for "the client closed the connection first": only ever a metrics label, never sent.
    ErrorKind.CLIENT_CLOSED: ErrorSpec(499, "invalid_request_error", "client_closed_request"),
}

TEI_PATHS = frozenset({"/embed", "/info"})
"""Routes in text-embeddings-inference's shape: their errors use TEI's body too."""

RETRY_AFTER_S = 1
"""Sent with every 429: overload clears in about one batch time, so callers should come back soon."""

UNAVAILABLE_RETRY_AFTER_S = 3
"""Sent with every 503: the launcher's watchdog has a crashed tritonserver serving again in about 3 s
(RELIABILITY.md, "Recovery"). The openai SDK waits what Retry-After says before each of its retries (two by
default), so its callers ride out a restart instead of getting an error after its own 0.5 s and 1 s backoff."""


class GatewayError(Exception):
    """A failure with its kind; raised anywhere, rendered once by `render`."""

    def __init__(
        self, kind: ErrorKind, message: str, param: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"GatewayError({self.kind.value}, {self.message!r}, param={self.param!r})"


def error_body(error: GatewayError) -> dict[str, dict[str, str | None]]:
    """The OpenAI error object for `error`."""
    spec = ERROR_TABLE[error.kind]
    return {"error": {"message": error.message, "type": spec.type, "param": error.param, "code": spec.code}}


def tei_error_body(error: GatewayError) -> dict[str, str]:
    return {"error": error.message, "error_type": ERROR_TABLE[error.kind].tei_type}


def render(error: GatewayError, path: str = "") -> Response:
    """The only place an error becomes an HTTP response (status, body and headers); `path` picks the body's
    shape (TEI's on `TEI_PATHS`, OpenAI's elsewhere)."""
    spec = ERROR_TABLE[error.kind]
    headers = dict(error.headers)
    if error.kind is ErrorKind.OVERLOADED:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    elif error.kind is ErrorKind.UNAVAILABLE:
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_S)
    elif error.kind is ErrorKind.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    body = tei_error_body(error) if path in TEI_PATHS else error_body(error)
    return Response(orjson.dumps(body), status_code=spec.status, headers=headers, media_type="application/json")


def from_http_status(status: int, detail: str, headers: Mapping[str, str] | None = None) -> GatewayError:
    """Starlette's own HTTP errors (unknown route, wrong method, bad JSON) in our kinds."""
    kind = {
        404: ErrorKind.NOT_FOUND,
        405: ErrorKind.METHOD_NOT_ALLOWED,
        413: ErrorKind.PAYLOAD_TOO_LARGE,
        401: ErrorKind.UNAUTHENTICATED,
    }.get(status)
    if kind is None:
        kind = ErrorKind.VALIDATION if 400 <= status < 500 else ErrorKind.BACKEND
    return GatewayError(kind, detail, headers=headers)
