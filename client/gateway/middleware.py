"""Pure ASGI guards that run before FastAPI parses anything: metrics, API key, body size, disconnects.

Pure ASGI (not BaseHTTPMiddleware) so a rejected request costs no body read and no parsing,
and the accepted body is streamed in once.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
import uuid
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bge_client.gateway.errors import ERROR_TABLE, ErrorKind, GatewayError, render
from bge_client.gateway.metrics import Metrics

PUBLIC_PATHS = frozenset({"/health"})
"""Reachable without the API key: orchestrators probe health without secrets."""

ROUTE_LABELS = frozenset(
    {"/v1/embeddings", "/v1/models", "/health", "/metrics", "/tokenize", "/embed", "/info", "/version"}
)
"""Metric labels are limited to known routes so fuzzed paths cannot blow up cardinality."""

MODEL_ROUTE = "/v1/models/{model}"
"""`GET /v1/models/<id>`, one label whatever the id."""


def route_label(path: str) -> str:
    if path in ROUTE_LABELS:
        return path
    return MODEL_ROUTE if path.startswith("/v1/models/") else "other"


REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")
"""What a caller's own id may look like to be echoed back (no header injection, bounded length)."""


def request_id_of(scope: Scope) -> str:
    """The request's id (set by `RequestIdMiddleware`), for logs."""
    return str(scope.get("state", {}).get("request_id", "-"))


def request_started(scope: Scope) -> float:
    """When the gateway received the request (``time.perf_counter()``), for the timing headers."""
    return float(scope.get("state", {}).get("started", time.perf_counter()))


def request_id_for(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The caller's own ``X-Request-Id`` when it is a plain token, else a new one."""
    given = next((value for name, value in headers if name == REQUEST_ID_HEADER), b"")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex.encode()


class RequestIdMiddleware:
    """Gives every request an id and echoes it as ``X-Request-Id`` on the answer (errors included).

    A caller's own ``X-Request-Id`` is kept when it is a plain token; otherwise a new one is made, so
    one id follows the request through the caller's logs and the gateway's.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(scope.get("headers", []))
        state = scope.setdefault("state", {})
        state["request_id"], state["started"] = request_id.decode(), time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, (REQUEST_ID_HEADER, request_id)]}
            await send(message)

        await self.app(scope, receive, send_with_id)


async def reject(error: GatewayError, metrics: Metrics, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with the one error renderer and count the reason."""
    metrics.count_error(error.kind.value)
    await render(error, scope.get("path", ""))(scope, receive, send)


CLIENT_CLOSED_STATUS = ERROR_TABLE[ErrorKind.CLIENT_CLOSED].status
"""Status label of a request whose client left before the answer (no response was sent)."""


class MetricsMiddleware:
    """Counts every HTTP request by route and status, and times it.

    A request that ends without a response was abandoned by its client (see `CancelOnDisconnectMiddleware`)
    and is counted as 499; one that raised is counted as 500, as the server answers it.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = route_label(path)
        status = 0
        start = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        except Exception:
            status = status or 500
            raise
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, str(status or CLIENT_CLOSED_STATUS)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


def key_accepted(headers: Sequence[tuple[bytes, bytes]], expected: bytes) -> bool:
    """`Authorization: Bearer <expected>`, compared in constant time."""
    header = next((value for name, value in headers if name == b"authorization"), b"")
    scheme, _, token = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), expected)


class ApiKeyMiddleware:
    """401 unless `Authorization: Bearer <key>` matches, on every path but /health."""

    def __init__(self, app: ASGIApp, api_key: str, metrics: Metrics) -> None:
        self.app = app
        self.expected = api_key.encode("utf-8")
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if key_accepted(scope["headers"], self.expected):
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        problem = "is not valid" if given else "is missing"
        await reject(
            GatewayError(ErrorKind.UNAUTHENTICATED, f"The API key {problem}: send 'Authorization: Bearer <key>'"),
            self.metrics,
            scope,
            receive,
            send,
        )


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`, judged from Content-Length and again while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    def _too_large(self, size: str) -> GatewayError:
        return GatewayError(
            ErrorKind.PAYLOAD_TOO_LARGE,
            f"The request body is {size}, over the limit of {self.max_bytes} bytes; "
            "split the input into several requests",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await reject(
                    GatewayError(ErrorKind.VALIDATION, "Content-Length is not a number"),
                    self.metrics,
                    scope,
                    receive,
                    send,
                )
                return
            if int(declared) > self.max_bytes:
                await reject(self._too_large(f"{int(declared)} bytes"), self.metrics, scope, receive, send)
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await reject(self._too_large(f"more than {self.max_bytes} bytes"), self.metrics, scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


class CancelOnDisconnectMiddleware:
    """Cancels a request's handler as soon as its client disconnects, so no further Triton call is sent.

    uvicorn keeps running a handler whose client has gone; for a 2048-input request that means up to
    128 Triton calls computed for nobody while other callers wait. (Calls already in flight finish at
    Triton unless cancelling is on (`cancellation_decision`); see `EmbeddingService._timed`.) The body is read first
    (the body limit has already bounded it), then the handler runs as a task while the connection is
    watched: once the body is in, the only message left to receive is `http.disconnect`.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body: list[Message] = []
        while not body or body[-1].get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":  # gone before the body arrived: nothing was started
                self.metrics.count_error(ErrorKind.CLIENT_CLOSED.value)
                return
            body.append(message)
        gone = asyncio.Event()
        answered = False

        async def replay() -> Message:
            if body:
                return body.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send_and_mark(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, replay, send_and_mark))
        watcher = asyncio.ensure_future(receive())
        try:
            await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            handler.cancel()
            raise
        finally:
            watcher.cancel()
        # uvicorn also says "disconnect" once the answer has been sent: only an unanswered request is abandoned.
        abandoned = (
            watcher.done()
            and not watcher.cancelled()
            and watcher.exception() is None
            and watcher.result()["type"] == "http.disconnect"
        )
        if abandoned and not handler.done() and not answered:
            gone.set()
            handler.cancel()
            self.metrics.count_error(ErrorKind.CLIENT_CLOSED.value)
            await asyncio.wait({handler})
            if not handler.cancelled():
                handler.exception()  # retrieved on purpose: nobody is left to tell
            return
        await handler
