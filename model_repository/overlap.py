"""How many of Triton's batches one encoder instance works on at once.

Triton hands a model instance its next batch only once ``execute`` returns. If ``execute`` waited
for its own batch, a lane that finished its share early would idle until the slowest lane is done:
with single-text traffic (batches of 3 or 5 texts on 2 lanes) that left a quarter of the cores idle
(BENCHMARKS.md, run 13). So the encoder answers through each request's response sender and
``execute`` returns once the batch *before* its own is done: the next batch is queued behind the
current one, a free lane starts on it, and everything beyond those two batches waits in Triton's
queue, where its queue policy, metrics and the launcher's backlog signal see it.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, wait
from typing import Any


class InFlightWindow:
    """At most `depth` submitted batches not yet done: `admit` blocks the caller until that holds again.

    depth 1: the caller waits for its own batch (no overlap, for a single lane); depth 2: for the one before.
    """

    def __init__(self, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        self._pending: deque[Future[Any]] = deque()

    def admit(self, batch: Future[Any]) -> None:
        """Count `batch` in, then wait for the oldest ones until fewer than `depth` remain unfinished."""
        self._pending.append(batch)
        while len(self._pending) >= self.depth:
            wait([self._pending.popleft()])  # returns at once for a batch already done

    def drain(self) -> None:
        """Wait for every admitted batch (the model's finalize)."""
        while self._pending:
            wait([self._pending.popleft()])

    @property
    def unfinished(self) -> int:
        return sum(not batch.done() for batch in self._pending)


def overlap_depth(lanes: int) -> int:
    """Two batches at once where lanes could idle between them; one where a single lane runs everything."""
    return 2 if lanes > 1 else 1
