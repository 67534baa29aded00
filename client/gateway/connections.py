"""Connection hygiene: how long a client may take to send a request, how big its headers may be, how many
connections are served at once. The options handed to uvicorn, and the two things uvicorn lacks.

uvicorn closes a keep-alive connection left idle after an answer (`timeout_keep_alive`) and answers 503 past
`limit_concurrency` connections. It has no deadline for a request to arrive: a client that connects and sends
nothing, or sends its headers a byte at a time (slowloris), holds a connection and its file descriptor for ever.
And its fast parser, httptools (llhttp, in C), has no bound on header bytes; h11, the one that has, is pure
Python and costs about 1 ms of CPU per request, which is what a burst of refusals (429) waits for
(RELIABILITY.md, "Fast 429"). `GuardedProtocol` is uvicorn's httptools protocol with both guards: a
connection whose request has not arrived `read_timeout_s` after it opened (or after its previous answer) is
closed, and a request line plus headers over `max_header_bytes` is answered 431 and the connection closed.

It also writes the gateway's early answers (`admission.AdmissionDoor`: 429 when every slot is taken) from
the header callback, without starting the app, so under a burst a refusal never waits in the event loop
behind the work of the requests that were admitted. The rest of a refused request's body is read and
dropped, and the connection serves its next request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bge_client.gateway.admission import EarlyAnswer

log = logging.getLogger("bge-gateway")

SAY_EVERY_S = 60.0
"""Closed slow connections are said at most once a minute (with the count since): an attack sends thousands."""

EarlyAnswerer = Callable[[str, str, Sequence[tuple[bytes, bytes]]], EarlyAnswer | None]
"""(method, path, headers) -> the whole answer to write now, or None to let the app answer."""

HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request to arrive and a bound on its header bytes."""

    read_timeout_s: ClassVar[float] = 30.0
    max_header_bytes: ClassVar[int] = 32 * 1024
    early_answer: ClassVar[EarlyAnswerer | None] = None
    _closed_since_said: ClassVar[int] = 0
    _said_at: ClassVar[float] = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._in_headers = True  # the next bytes belong to a request line or headers
        self._header_bytes = 0
        self._answered_early = False  # this request was answered from its headers: drop its body

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)  # a read holding headers and body counts whole: checked after parsing
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
            message = f"The request line and headers exceed {self.max_header_bytes} bytes (max_header_bytes)."
            self.transport.write(HEADERS_TOO_LARGE % (len(message), message.encode()))
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_headers, self._header_bytes = False, 0
        if self._answer_early():
            return
        super().on_headers_complete()

    def _answer_early(self) -> bool:
        """Write the early answer for this request if there is one and writing it now is safe: no earlier
        response still owed on this connection (HTTP/1.1 answers in order), a keep-alive client (the unread
        body is then read and dropped), no ``Expect: 100-continue`` (that client waits before sending its body)."""
        answerer = type(self).early_answer
        if answerer is None or self.expect_100_continue or self.pipeline or not self.parser.should_keep_alive():
            return False
        if (self.cycle is not None and not self.cycle.response_complete) or self.parser.should_upgrade():
            return False
        raw_path = httptools.parse_url(self.url).path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        answer = answerer(self.parser.get_method().decode("ascii"), self.root_path + path, self.headers)
        if answer is None:
            return False
        head = [b"HTTP/1.1 %d %s\r\n" % (answer.status, HTTPStatus(answer.status).phrase.encode())]
        for name, value in [*self.server_state.default_headers, *answer.headers]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", answer.body]))
        self.server_state.total_requests += 1
        self._answered_early = True
        self._arm()  # the rest of its body, then the next request, within the read deadline
        return True

    def on_body(self, body: bytes) -> None:
        if not self._answered_early:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._answered_early:
            self._answered_early = False
            self._in_headers, self._header_bytes = True, 0
            self._arm()  # idle now: the next request has its own deadline
            if not self.transport.is_closing():  # and the keep-alive timeout, as after any answer
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )
            return
        super().on_message_complete()
        self._in_headers, self._header_bytes = True, 0
        if self.cycle is not None and self.cycle.response_complete:
            self._arm()  # the app answered before the body was all in: the next request has its own deadline
        else:
            self._disarm()  # the whole request is in: the app has it now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection (or the rest of this body) has its own deadline

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        self.transport.close()  # the app, if it was waiting for the body, sees a disconnect
        cls = type(self)
        cls._closed_since_said += 1
        now = time.monotonic()
        if now - cls._said_at >= SAY_EVERY_S:
            log.warning(
                "closed %d connection(s) whose request did not arrive within %g s (read_timeout_s; idle, "
                "or sending too slowly); last from %s",
                cls._closed_since_said,
                self.read_timeout_s,
                f"{self.client[0]}:{self.client[1]}" if self.client else "unknown",
            )
            cls._closed_since_said, cls._said_at = 0, now


def guarded_protocol(
    read_timeout_s: float, max_header_bytes: int, early_answer: EarlyAnswerer | None = None
) -> type[GuardedProtocol]:
    """The protocol class for one server, with its read deadline, header bound and early answers."""
    attributes = {
        "read_timeout_s": read_timeout_s,
        "max_header_bytes": max_header_bytes,
        "early_answer": staticmethod(early_answer) if early_answer is not None else None,
    }
    return type("GuardedProtocol", (GuardedProtocol,), attributes)


def uvicorn_options(
    read_timeout_s: float,
    keep_alive_timeout_s: float,
    max_header_bytes: int,
    max_connections: int,
    early_answer: EarlyAnswerer | None = None,
) -> dict[str, Any]:
    """uvicorn.run keyword arguments for connection hygiene (and the app's early answers)."""
    return {
        "http": guarded_protocol(read_timeout_s, max_header_bytes, early_answer),
        "timeout_keep_alive": keep_alive_timeout_s,
        "limit_concurrency": max_connections,
    }
