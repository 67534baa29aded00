"""Unit tests of the gateway's fair share of Triton: the budget, the order of grants, deadlines, cancels.

The logic alone (no server); tests/reliability/test_reliability_fairness.py shows it against a real
tritonserver and gateway.
"""

from __future__ import annotations

import asyncio

import pytest
from fake_backend import FakeBackend

from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.fair_share import FairShare, NoRoomInTimeError, ids_cost, text_cost
from bge_client.gateway.inference import Deadline
from bge_client.gateway.metrics import Metrics
from bge_client.gateway.protocol import EmbeddingRequest
from bge_client.gateway.service import EmbeddingService
from bge_client.gateway.settings import GatewaySettings


def far() -> Deadline:
    """A deadline a minute from now (made per call: one made at import would pass while the suite runs)."""
    return Deadline.after(60)


async def settle() -> None:
    """Let woken waiters run (a grant resumes its task a few loop turns later)."""
    await asyncio.sleep(0.01)


def test_costs_are_an_upper_bound_of_tokens_capped_at_what_the_model_reads() -> None:
    assert text_cost(["天气很好", "x" * 5000], max_length=512) == 6 + 512
    assert ids_cost([[101, 7, 102], [101, 102]]) == 5


def test_room_goes_to_requests_let_in_least_recently_then_to_the_oldest_chunk() -> None:
    async def run() -> list[str]:
        share = FairShare(capacity=10)
        order: list[str] = []
        await share.acquire("big", 10, far())  # fills it

        async def wait(owner: str, cost: int) -> None:
            await share.acquire(owner, cost, far())
            order.append(owner)

        tasks = [asyncio.create_task(wait("big", 10)) for _ in range(2)]
        await settle()
        tasks += [asyncio.create_task(wait("small", 1)), asyncio.create_task(wait("other", 1))]
        await settle()
        assert order == [] and share.queued == 4
        share.release("big", 10)  # nobody holds room: small and other were never let in, big was
        await settle()
        assert order == ["small", "other"]  # big's next (10) does not fit beside them
        share.release("small", 1)
        share.release("other", 1)
        await settle()
        share.release("big", 10)
        await asyncio.gather(*tasks)
        share.release("big", 10)
        assert share.used == 0 and share.owners == 0  # nothing kept for finished requests
        return order

    assert asyncio.run(run()) == ["small", "other", "big", "big"]


def test_a_small_request_passes_the_chunks_of_a_big_one_that_holds_room() -> None:
    async def run() -> list[str]:
        share = FairShare(capacity=11)
        order: list[str] = []
        await share.acquire("big", 5, far())
        await share.acquire("big", 5, far())

        async def wait(owner: str, cost: int) -> None:
            await share.acquire(owner, cost, far())
            order.append(owner)

        queued_big = [asyncio.create_task(wait("big", 5)) for _ in range(4)]
        await settle()
        small = asyncio.create_task(wait("small", 1))
        await settle()
        share.release("big", 5)  # big still holds 5, small none: small goes first (6 of 11), then big fits too
        await asyncio.gather(small)
        await settle()
        for task in queued_big:
            task.cancel()
        return order

    assert asyncio.run(run())[:2] == ["small", "big"]


def test_a_chunk_bigger_than_the_capacity_goes_alone_and_nobody_starves() -> None:
    async def run() -> int:
        share = FairShare(capacity=4)
        await share.acquire("a", 3, far())
        big = asyncio.create_task(share.acquire("b", 100, far()))
        await settle()
        assert not big.done()
        share.release("a", 3)
        await big
        return share.used

    assert asyncio.run(run()) == 100


def test_the_deadline_passing_in_the_queue_frees_its_place() -> None:
    async def run() -> tuple[NoRoomInTimeError, int]:
        share = FairShare(capacity=1)
        await share.acquire("a", 1, far())
        with pytest.raises(NoRoomInTimeError) as caught:
            await share.acquire("b", 1, Deadline.after(0.05))
        return caught.value, share.queued

    error, queued = asyncio.run(run())
    assert str(error) == "1 of 1 tokens in flight, 1 chunks queued"  # as it was when the deadline passed
    assert queued == 0


def test_a_deadline_in_the_gateway_queue_is_a_504_naming_the_setting() -> None:
    async def run() -> GatewayError:
        backend = FakeBackend(max_batch_size=1, hold=asyncio.Event())
        settings = GatewaySettings(request_timeout_s=0.1, max_inflight_tokens=1)
        service = EmbeddingService(settings, backend, Metrics())
        request = EmbeddingRequest.model_validate({"model": "bge-large-zh-v1.5", "input": ["a", "b"]})
        with pytest.raises(GatewayError) as caught:
            await service.embed(request)
        return caught.value

    error = asyncio.run(run())
    assert error.kind is ErrorKind.TIMEOUT
    assert "within 0.1 s (request_timeout_s)" in error.message and "were not sent" in error.message


def test_a_cancelled_waiter_leaves_the_queue_and_lets_the_next_in() -> None:
    async def run() -> tuple[int, int, bool]:
        share = FairShare(capacity=1)
        await share.acquire("a", 1, far())
        gone = asyncio.create_task(share.acquire("b", 1, far()))
        after = asyncio.create_task(share.acquire("c", 1, far()))
        await settle()
        gone.cancel()
        await settle()
        queued = share.queued
        share.release("a", 1)
        await after
        return queued, share.used, gone.cancelled()

    assert asyncio.run(run()) == (1, 1, True)


def test_the_service_keeps_tritons_share_and_abandoned_chunks_are_never_sent() -> None:
    """A 64-text request over a 4-text share: at most 4 texts in Triton; cancelled, nothing more is sent."""

    async def run() -> tuple[int, int, int]:
        gate = asyncio.Event()
        backend = FakeBackend(max_batch_size=1, hold=gate)
        settings = GatewaySettings(chunk_concurrency=64, max_inflight_tokens=12)  # "t00" costs 3 + 2 = 5 tokens
        service = EmbeddingService(settings, backend, Metrics())
        texts = [f"t{i:02}" for i in range(64)]
        request = EmbeddingRequest.model_validate({"model": "bge-large-zh-v1.5", "input": texts})
        task = asyncio.create_task(service.embed(request))
        await asyncio.sleep(0.05)
        sent_while_held = len(backend.text_calls)
        task.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.sleep(0.05)
        share = service.calls.share
        assert share is not None
        return sent_while_held, len(backend.text_calls), share.used

    sent_while_held, sent_in_all, used_after = asyncio.run(run())
    assert sent_while_held == 2  # 5 + 5 tokens fit in 12, a third does not
    assert sent_in_all == 2  # the 62 queued chunks left with their request
    assert used_after == 0


def test_health_is_503_while_the_queue_is_older_than_the_backlog_limit() -> None:
    async def run() -> tuple[str, bool]:
        gate = asyncio.Event()
        backend = FakeBackend(max_batch_size=1, hold=gate)
        settings = GatewaySettings(max_inflight_tokens=1, backlog_unready_s=0.1)
        service = EmbeddingService(settings, backend, Metrics())
        await service.health()  # idle: ready
        request = EmbeddingRequest.model_validate({"model": "bge-large-zh-v1.5", "input": ["a", "b", "c"]})
        task = asyncio.create_task(service.embed(request))
        await asyncio.sleep(0.2)
        with pytest.raises(GatewayError) as unready:
            await service.health()
        gate.set()
        await task
        await service.health()  # drained: ready again
        return unready.value.message, unready.value.kind is ErrorKind.UNAVAILABLE

    message, unavailable = asyncio.run(run())
    assert unavailable and message.startswith("backlogged: the oldest of 2 chunks") and "backlog_unready_s" in message
