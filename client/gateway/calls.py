"""One request's Triton calls: its scope, each call sent when the fair share has room, and its slot freed
only once every call it started has ended.

The service decides what to call; this module decides when a call may go and what happens to it when
its request goes away: unless cancelling is safe (`cancellation_decision`), a call already sent is
shielded and left to finish in Triton, and its request's slot stays taken until it has, so the bounds
on Triton work hold through disconnects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.fair_share import FairShare, NoRoomInTimeError
from bge_client.gateway.inference import Deadline
from bge_client.gateway.metrics import Metrics

T = TypeVar("T")


@dataclass(eq=False)  # hashed by identity: it is the owner of its chunks in the fair share
class RequestScope:
    """What follows one request into its chunk tasks: its deadline and the Triton calls it started."""

    deadline: Deadline
    calls: set[asyncio.Future[Any]] = field(default_factory=set)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done-callback of a shielded call whose request has gone: its outcome has nobody left to tell."""
    if not task.cancelled():
        task.exception()


class TritonCalls:
    """Sends calls through the fair share, times them, and holds what abandoned requests left running."""

    def __init__(self, metrics: Metrics, request_timeout_s: float) -> None:
        self.metrics = metrics
        self.request_timeout_s = request_timeout_s
        self.share: FairShare | None = None  # sized from the model once it is known
        self.cancel = False
        self._leftovers: set[asyncio.Task[None]] = set()

    def configure(self, share: FairShare, cancel: bool) -> None:
        self.share, self.cancel = share, cancel
        self.metrics.inflight_capacity.set(share.capacity)
        self.metrics.inflight_tokens.set_function(lambda: share.used)
        self.metrics.queued_chunks.set_function(lambda: share.queued)

    async def send(self, call: Callable[[], Awaitable[T]], scope: RequestScope, cost: int) -> T:
        """One Triton call of `cost` tokens, sent when the fair share has room for it, timed. Unless `cancel`,
        it is shielded: a request that is cancelled (client gone, a sibling chunk failed) sends no further
        calls but lets this one finish at Triton."""
        share = self.share
        assert share is not None, "configure() first"
        waited = time.perf_counter()
        try:
            await share.acquire(scope, cost, scope.deadline)
        except NoRoomInTimeError as exc:
            raise GatewayError(
                ErrorKind.TIMEOUT,
                f"the request did not finish within {self.request_timeout_s:g} s (request_timeout_s): "
                f"its chunks left were waiting for room in Triton ({exc}) and were not sent",
            ) from None
        start = time.perf_counter()
        self.metrics.fair_share_wait_seconds.observe(start - waited)
        task: asyncio.Future[T] = asyncio.ensure_future(call())
        task.add_done_callback(lambda _: share.release(scope, cost))
        task.add_done_callback(lambda _: self.metrics.triton_seconds.observe(time.perf_counter() - start))
        if self.cancel:
            return await task
        scope.calls.add(task)
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    def check_backlog(self, limit_s: float) -> None:
        """Not ready (UNAVAILABLE) while the gateway's queue is so old that new requests would likely miss
        their deadline: readiness takes the pod out of the Service until the backlog drains."""
        share = self.share
        if share is None or (waited := share.oldest_wait_s()) <= limit_s:
            return
        raise GatewayError(
            ErrorKind.UNAVAILABLE,
            f"backlogged: the oldest of {share.queued} chunks waiting for room in Triton has waited {waited:.1f} s, "
            f"over {limit_s:g} s (backlog_unready_s); new requests would likely miss their deadline. Ready again "
            "once the backlog drains",
        )

    def when_done(self, scope: RequestScope, free_slot: Callable[[], None]) -> None:
        """Free the request's slot now, or, if Triton calls it left running are still out, once they end: so
        max_concurrent_requests keeps bounding the requests with work in Triton."""
        running = [call for call in scope.calls if not call.done()]
        if not running:
            free_slot()
            return

        async def release_later() -> None:
            await asyncio.wait(running)
            free_slot()

        leftover = asyncio.ensure_future(release_later())
        self._leftovers.add(leftover)
        leftover.add_done_callback(self._leftovers.discard)

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: wait for Triton calls left running by abandoned requests (each ends by its deadline)."""
        if self._leftovers:
            await asyncio.wait(set(self._leftovers), timeout=timeout_s)
