"""Abandoned and oversized work cannot take the service from other clients (issue 18, items 1 and 2).

The gateway lets at most `max_inflight_tokens` of calls into Triton (by default two full batches) and
keeps every other chunk in its own queue, fewest-tokens-in-flight request first
(`bge_client.gateway.fair_share`). Each test runs the same load against the default gateway and against
one whose share is unbounded (what the gateway did before: each request kept `chunk_concurrency` calls
in Triton), and prints both figures; it asserts on the default one only.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import httpx
import pytest
from gateway.gateway_process import SERVED_NAME, Gateway
from reliability_support import GatewayFactory, Scrape, body, pending_settles
from support import TritonHandle as SharedTriton

UNBOUNDED = str(10**12)
ABANDONERS = 50
ABANDONED_TEXTS = 256
HANG_UP_S = 0.2
BIG_TEXTS = 2048
BIG_CHARS = 2600


@pytest.fixture(scope="module")
def gateways(start_gateway_for: GatewayFactory) -> dict[str, Gateway]:
    return {
        "fair share (default)": start_gateway_for(),
        "unbounded (before)": start_gateway_for(MAX_INFLIGHT_TOKENS=UNBOUNDED),
    }


async def abandon_all(url: str) -> float:
    """ABANDONERS clients each post ABANDONED_TEXTS texts and hang up after HANG_UP_S; returns when the last
    one has hung up."""

    async def one(client_no: int) -> None:
        texts = [f"断开连接测试 {client_no}-{i} " * 20 for i in range(ABANDONED_TEXTS)]
        async with httpx.AsyncClient(timeout=30) as client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.post(f"{url}/v1/embeddings", json=body(texts)), HANG_UP_S)

    await asyncio.gather(*(one(n) for n in range(ABANDONERS)))
    return time.monotonic()


def test_after_50_clients_abandon_big_requests_a_fresh_one_is_answered_at_once(
    gateways: dict[str, Gateway], triton: SharedTriton
) -> None:
    """Done-when of issue 18: answered within 5 s of the last abandonment."""
    answered: dict[str, float] = {}
    for name, gateway in gateways.items():
        pending_settles(triton.metrics_url, triton.model_name, timeout_s=300)
        last_left = asyncio.run(abandon_all(gateway.url))
        response = httpx.post(f"{gateway.url}/v1/embeddings", json=body(["放弃之后的新请求"]), timeout=300)
        answered[name] = time.monotonic() - last_left
        assert response.status_code == 200, response.text[:300]
        print(
            f"\n{name}: {ABANDONERS} clients x {ABANDONED_TEXTS} texts hung up after {HANG_UP_S} s; a fresh "
            f"one-text request answered {answered[name]:.2f} s after the last left"
        )
    pending_settles(triton.metrics_url, triton.model_name, timeout_s=300)
    assert answered["fair share (default)"] < 5.0


def test_one_text_requests_keep_a_short_tail_during_a_2048_long_text_request(
    gateways: dict[str, Gateway], triton: SharedTriton
) -> None:
    """Done-when of issue 18: during a 2048 x 2600-character request, one-text p99 under 2 s."""
    big = body([f"{i}号长文档" + "天气不错，适合出门散步。" * (BIG_CHARS // 12) for i in range(BIG_TEXTS)])
    p99: dict[str, float] = {}
    for name, gateway in gateways.items():
        pending_settles(triton.metrics_url, triton.model_name, timeout_s=300)
        outcome: dict[str, object] = {}

        def send_big(url: str = gateway.url, into: dict[str, object] = outcome) -> None:
            start = time.monotonic()
            into["status"] = httpx.post(f"{url}/v1/embeddings", json=big, timeout=600).status_code
            into["seconds"] = time.monotonic() - start

        thread = threading.Thread(target=send_big)
        thread.start()
        time.sleep(0.5)  # the big request is admitted and its chunks are in Triton
        latencies: list[float] = []
        statuses: list[int] = []
        with httpx.Client(timeout=60) as client:
            while thread.is_alive():
                start = time.monotonic()
                response = client.post(f"{gateway.url}/v1/embeddings", json=body([f"短请求 {len(latencies)}"]))
                latencies.append(time.monotonic() - start)
                statuses.append(response.status_code)
        thread.join()
        assert outcome["status"] == 200 and set(statuses) == {200}
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
        p99[name] = cuts[98]
        print(
            f"\n{name}: {BIG_TEXTS} x {BIG_CHARS}-character request took {outcome['seconds']:.1f} s; meanwhile "
            f"{len(latencies)} one-text requests, p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p99 {p99[name] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )
        assert len(latencies) >= 5  # the big request lasted long enough to measure anything
    assert p99["fair share (default)"] < 2.0


def test_the_share_is_logged_and_exported(gateways: dict[str, Gateway]) -> None:
    gateway = gateways["fair share (default)"]
    httpx.post(f"{gateway.url}/v1/embeddings", json={"model": SERVED_NAME, "input": "开始"}, timeout=30)
    assert "tokens of calls in Triton at once (two batches of" in gateway.log()
    scrape = Scrape.of(f"{gateway.url}/metrics")
    assert scrape.value("bge_gateway_triton_token_capacity") > 0
    assert scrape.value("bge_gateway_triton_tokens_in_flight") == 0
    assert scrape.value("bge_gateway_queued_chunks") == 0


def test_readiness_says_backlogged_while_the_queue_is_old_and_recovers(start_gateway_for: GatewayFactory) -> None:
    """/health (the gateway's readiness probe) turns 503 while chunks wait longer than backlog_unready_s, and
    200 again once the backlog drained; the requests themselves are all answered."""
    gateway = start_gateway_for(MAX_INFLIGHT_TOKENS="1000", BACKLOG_UNREADY_S="0.3")
    texts = [f"积压测试 {i} " + "天气不错，适合出门散步。" * (BIG_CHARS // 12) for i in range(512)]
    outcome: dict[str, int] = {}

    def send() -> None:
        outcome["status"] = httpx.post(f"{gateway.url}/v1/embeddings", json=body(texts), timeout=300).status_code

    thread = threading.Thread(target=send)
    thread.start()
    seen: list[tuple[float, int, str]] = []
    start = time.monotonic()
    while thread.is_alive():
        health = httpx.get(f"{gateway.url}/health", timeout=10)
        seen.append((time.monotonic() - start, health.status_code, health.text[:200]))
        time.sleep(0.1)
    thread.join()
    after = httpx.get(f"{gateway.url}/health", timeout=10)
    unready = [(t, text) for t, status, text in seen if status == 503]
    print(
        f"\n512 x 2600-character request over a 1000-token share: /health 503 for {len(unready)} of {len(seen)} polls "
        f"(first at {unready[0][0] if unready else float('nan'):.2f} s), 200 after it finished"
    )
    assert outcome["status"] == 200
    assert unready and "backlogged" in unready[0][1]
    assert after.status_code == 200
