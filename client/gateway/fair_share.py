"""How much work the gateway lets into Triton at once, and which request's chunk goes next.

Triton works through what it is sent in order and, on 2.51, cannot safely be told to drop a call its
client abandoned. So the gateway keeps the queue itself (as text-embeddings-inference's router does):
at most `capacity` tokens of calls are in Triton at any time, enough for two full encoder batches,
and every other chunk waits here, where a client that hangs up or a deadline that passes removes it
before Triton ever sees it. When room frees, the waiting chunk whose request has the fewest tokens in
flight goes first, so a one-text request is never queued behind a 2048-text one; among equals the
oldest goes first. No request is ever refused for being bigger than `capacity`: a chunk is let in
whenever nothing else is in flight.

Pure asyncio, no I/O: unit-tested without a server (tests/gateway/test_fair_share.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from bge_client.gateway.inference import Deadline


class NoRoomInTimeError(TimeoutError):
    """The deadline passed while the chunk waited; it was never sent. The message says how full it was."""


def text_cost(texts: Sequence[str], max_length: int) -> int:
    """Tokens a text chunk may cost the encoder, without tokenizing: a WordPiece token covers at least one
    character, so a text has at most len + 2 tokens ([CLS], [SEP]), and never more than the model reads."""
    return sum(min(len(text) + 2, max_length) for text in texts)


def ids_cost(rows: Sequence[Sequence[int]]) -> int:
    return sum(len(row) for row in rows)


@dataclass
class _Owner:
    tokens: int = 0  # in Triton now
    waiting: int = 0  # chunks queued here
    last_grant: int = -1  # when it was last let in (grant counter); -1: never


@dataclass
class _Waiter:
    owner: Hashable
    cost: int
    seq: int
    since: float
    granted: asyncio.Future[None]


class FairShare:
    """A token budget for work in Triton, granted fewest-tokens-in-flight first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 token, got {capacity}")
        self.capacity = capacity
        self.used = 0
        self._owners: dict[Hashable, _Owner] = {}
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self._grants = itertools.count()

    @property
    def queued(self) -> int:
        """Chunks waiting for room."""
        return len(self._waiting)

    @property
    def owners(self) -> int:
        """Requests with chunks in Triton or queued here (0 when idle: nothing is kept for a finished one)."""
        return len(self._owners)

    def oldest_wait_s(self) -> float:
        """How long the longest-waiting chunk has waited (0 when none waits)."""
        now = time.monotonic()
        return max((now - w.since for w in self._waiting), default=0.0)

    async def acquire(self, owner: Hashable, cost: int, deadline: Deadline) -> None:
        """Wait until `cost` tokens of `owner`'s may go to Triton; `NoRoomInTimeError` if `deadline` passes first.

        Cancelling the caller (its client left) removes it from the queue; once this returns, the caller
        must `release(owner, cost)` when its Triton call ends.
        """
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(owner, cost, next(self._seq), time.monotonic(), granted)
        self._waiting.append(waiter)
        self._owners.setdefault(owner, _Owner()).waiting += 1
        self._dispatch()
        if granted.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(granted), timeout=max(deadline.left_s(), 0.0))
        except BaseException as exc:
            how_full = f"{self.used} of {self.capacity} tokens in flight, {self.queued} chunks queued"
            if granted.done() and not granted.cancelled():
                self.release(owner, cost)  # granted in the same instant it gave up: hand the room back
            else:
                self._waiting.remove(waiter)
                granted.cancel()
                self._owners[owner].waiting -= 1
                self._forget_if_idle(owner)
                self._dispatch()
            if isinstance(exc, TimeoutError):
                raise NoRoomInTimeError(how_full) from None
            raise

    def release(self, owner: Hashable, cost: int) -> None:
        """The Triton call holding `cost` of `owner`'s tokens has ended (answered, failed or cancelled)."""
        self.used -= cost
        self._owners[owner].tokens -= cost
        self._forget_if_idle(owner)
        self._dispatch()

    def _forget_if_idle(self, owner: Hashable) -> None:
        state = self._owners[owner]
        if state.tokens <= 0 and state.waiting <= 0:
            del self._owners[owner]

    def _key(self, waiter: _Waiter) -> tuple[int, int, int]:
        """Fewest tokens in flight first; among equals the request let in longest ago (round robin), then the
        oldest chunk."""
        state = self._owners[waiter.owner]
        return state.tokens, state.last_grant, waiter.seq

    def _dispatch(self) -> None:
        while self._waiting:
            best = min(self._waiting, key=self._key)
            if self.used > 0 and self.used + best.cost > self.capacity:
                return  # the fairest chunk does not fit: nobody passes it, so it cannot starve
            self._waiting.remove(best)
            self.used += best.cost
            state = self._owners[best.owner]
            state.tokens += best.cost
            state.waiting -= 1
            state.last_grant = next(self._grants)
            best.granted.set_result(None)
