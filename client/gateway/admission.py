"""The gateway's door: a request to an embedding route is refused (429) from its headers alone when every one of
`max_concurrent_requests` slots is taken, before its body is read.

Under a 10x burst a refusal then costs the gateway only the request's headers, so it stays fast however big the
bodies are. The service admits for real after parsing (`EmbeddingService._admitted`); this is the cheap early
answer, asked in two places with one decision: the HTTP protocol (`connections.GuardedProtocol`), as soon as a
request's headers are parsed and before the app runs, and `AdmissionMiddleware` inside the ASGI stack (other
servers, pipelined requests, a slot taken while a body streamed in).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from bge_client.gateway.errors import GatewayError, render
from bge_client.gateway.metrics import Metrics
from bge_client.gateway.middleware import REQUEST_ID_HEADER, key_accepted, reject, request_id_for, route_label

ADMITTED_PATHS = frozenset({"/v1/embeddings", "/embed", "/tokenize"})
"""Routes that take one of the service's max_concurrent_requests slots."""


@dataclass(frozen=True)
class EarlyAnswer:
    """A whole answer decided from a request's headers alone, for the HTTP protocol to write as it is."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class AdmissionDoor:
    """429 when every slot is taken, decided from the request line and headers before the body is read.

    `early_answer` is the HTTP protocol's question: it writes the refusal at once, without starting the app, so a
    refusal never waits behind admitted requests' work in the event loop. `refusal` is the middleware's. Both
    give the same answer and count it the same way.
    """

    def __init__(
        self, overloaded: Callable[[], GatewayError | None], metrics: Metrics, api_key: str | None = None
    ) -> None:
        self.overloaded = overloaded
        self.metrics = metrics
        self.expected_key = api_key.encode("utf-8") if api_key is not None else None

    def refusal(self, method: str, path: str) -> GatewayError | None:
        """The 429 for a request to an admitted route while every slot is taken, else None."""
        if method != "POST" or path not in ADMITTED_PATHS:
            return None
        return self.overloaded()

    def early_answer(self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]]) -> EarlyAnswer | None:
        """The refusal as status, headers and body, counted as the app would count it; None: let the app answer
        (not refused, or a key is required and this request's is not right: the app's 401 comes first)."""
        started = time.perf_counter()
        error = self.refusal(method, path)
        if error is None or (self.expected_key is not None and not key_accepted(headers, self.expected_key)):
            return None
        response = render(error, path)
        self.metrics.count_error(error.kind.value)
        route = route_label(path)
        self.metrics.requests.labels(route, str(response.status_code)).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - started)
        answer_headers = [*response.raw_headers, (REQUEST_ID_HEADER, request_id_for(headers))]
        return EarlyAnswer(response.status_code, answer_headers, bytes(response.body))


class AdmissionMiddleware:
    """`AdmissionDoor` inside the ASGI stack: for requests the protocol did not already refuse (other servers,
    pipelined requests, the moment a slot was taken while this request's body streamed in)."""

    def __init__(self, app: ASGIApp, door: AdmissionDoor, metrics: Metrics) -> None:
        self.app = app
        self.door = door
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self.door.refusal(scope["method"], scope["path"])
            if error is not None:
                await reject(error, self.metrics, scope, receive, send)
                return
        await self.app(scope, receive, send)
