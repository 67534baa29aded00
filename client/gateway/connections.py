"""Connection hygiene: how long a client may take to send a request, how big its headers may be, how many
connections are served at once. The options handed to uvicorn, and the one thing uvicorn lacks.

uvicorn closes a keep-alive connection left idle after an answer (`timeout_keep_alive`), bounds header
bytes with h11 (`h11_max_incomplete_event_size`; httptools, its default parser, has no such bound) and
answers 503 past `limit_concurrency` connections. It has no deadline for a request to arrive: a client
that connects and sends nothing, or sends its headers a byte at a time (slowloris), holds a connection
and its file descriptor for ever. `GuardedH11Protocol` closes such a connection once `read_timeout_s`
has passed since it opened (or since its previous answer) without a whole request arriving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("bge-gateway")

SAY_EVERY_S = 60.0
"""Closed slow connections are said at most once a minute (with the count since): an attack sends thousands."""


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request does not arrive within `read_timeout_s`."""

    read_timeout_s: ClassVar[float] = 30.0
    _closed_since_said: ClassVar[int] = 0
    _said_at: ClassVar[float] = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is h11.DONE or self.conn.their_state is h11.ERROR:
            self._disarm()  # the whole request is in (or refused): the app has it now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on this connection has its own deadline

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing() or self.conn.their_state is h11.DONE:
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


def guarded_protocol(read_timeout_s: float) -> type[GuardedH11Protocol]:
    """The protocol class for one server, with its read deadline."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"read_timeout_s": read_timeout_s})


def uvicorn_options(
    read_timeout_s: float, keep_alive_timeout_s: float, max_header_bytes: int, max_connections: int
) -> dict[str, Any]:
    """uvicorn.run keyword arguments for connection hygiene."""
    return {
        "http": guarded_protocol(read_timeout_s),
        "timeout_keep_alive": keep_alive_timeout_s,
        "h11_max_incomplete_event_size": max_header_bytes,
        "limit_concurrency": max_connections,
    }
