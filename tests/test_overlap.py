"""The encoder's window of batches in flight: how long Triton's execute call waits."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from bge_model_repository.overlap import InFlightWindow, overlap_depth


def _finish_later(future: Future[None], seconds: float) -> None:
    threading.Timer(seconds, future.set_result, args=(None,)).start()


def test_depth_one_waits_for_its_own_batch() -> None:
    window = InFlightWindow(1)
    own: Future[None] = Future()
    _finish_later(own, 0.2)
    window.admit(own)
    assert own.done() and window.unfinished == 0


def test_depth_two_waits_only_for_the_batch_before() -> None:
    window = InFlightWindow(2)
    before: Future[None] = Future()
    _finish_later(before, 0.2)
    window.admit(before)  # nothing earlier: returns at once
    assert not before.done()
    own: Future[None] = Future()
    started = time.monotonic()
    window.admit(own)
    assert before.done() and not own.done() and time.monotonic() - started >= 0.15
    assert window.unfinished == 1
    _finish_later(own, 0.1)
    window.drain()
    assert own.done() and window.unfinished == 0


def test_depth_follows_the_lanes() -> None:
    assert overlap_depth(1) == 1 and overlap_depth(2) == overlap_depth(4) == 2
    with pytest.raises(ValueError, match="at least 1"):
        InFlightWindow(0)
