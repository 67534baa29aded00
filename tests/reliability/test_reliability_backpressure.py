"""Backpressure: a burst of 10x capacity gets fast 429s with Retry-After, and nothing accepted is lost.

The gateway admits `MAX_CONCURRENT_REQUESTS` embedding requests and keeps at most `CHUNK_CONCURRENCY`
Triton calls in flight for each, so with 4 x 8 = 32 calls it never overflows the test encoder's queue
(`max_queue_size` 64): overload is refused at the door, at once, instead of after tokenization.
Triton's own queue bound answering 429 is shown by tests/gateway/test_gateway_errors.py
(`test_triton_queue_full_is_429_with_retry_after`).
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import statistics
import time
from pathlib import Path

import httpx
import orjson
import pytest
from gateway.gateway_process import Gateway
from reliability_support import (
    GatewayFactory,
    Scrape,
    assert_vectors,
    body,
    reference_vectors,
    texts_of,
)
from support import TritonHandle as SharedTriton

CAPACITY = 4
CHUNK_CONCURRENCY = 8
TRITON_QUEUE = 64  # max_queue_size of the session Triton's encoder (tests/conftest.py)
BURST = 10 * CAPACITY
TEXTS_PER_REQUEST = 8
MAX_RETRY_ROUNDS = 20


@pytest.fixture(scope="module")
def bounded_gateway(start_gateway_for: GatewayFactory) -> Gateway:
    return start_gateway_for(MAX_CONCURRENT_REQUESTS=str(CAPACITY), CHUNK_CONCURRENCY=str(CHUNK_CONCURRENCY))


def test_gateway_bound_fits_inside_tritons_queue() -> None:
    """The sizing rule the burst below relies on (RELIABILITY.md)."""
    assert CAPACITY * CHUNK_CONCURRENCY <= TRITON_QUEUE


def test_burst_of_10x_capacity_gets_fast_429s_and_loses_nothing(bounded_gateway: Gateway, triton: SharedTriton) -> None:
    requests = [texts_of(f"突发{r}", TEXTS_PER_REQUEST) for r in range(BURST)]
    expected = reference_vectors(
        triton.grpc_url, triton.model_name, [t for r in requests for t in r], triton.max_batch_size
    )
    url = f"{bounded_gateway.url}/v1/embeddings"
    metrics_url = f"{bounded_gateway.url}/metrics"
    before = Scrape.of(metrics_url)

    async def send(client: httpx.AsyncClient, texts: list[str]) -> tuple[httpx.Response, float]:
        start = time.monotonic()
        response = await client.post(url, json=body(texts))
        return response, time.monotonic() - start

    async def burst() -> list[tuple[httpx.Response, float]]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=BURST)) as client:
            return list(await asyncio.gather(*[send(client, texts) for texts in requests]))

    answers = asyncio.run(burst())
    after = Scrape.of(metrics_url)

    refused = [(i, r, s) for i, (r, s) in enumerate(answers) if r.status_code == 429]
    accepted = [(i, r, s) for i, (r, s) in enumerate(answers) if r.status_code == 200]
    assert len(refused) + len(accepted) == BURST, sorted({r.status_code for r, _ in answers})
    assert refused and accepted
    for _, response, seconds in refused:
        assert seconds < 1.0
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and "max_concurrent_requests" in error["message"]
    for i, response, _ in accepted:
        assert_vectors(response, requests[i], expected)
    # One count, three ways: 429s seen by the clients, the error counter, the per-status request counter.
    overloaded = after.value("bge_gateway_errors_total", reason="overloaded") - before.value(
        "bge_gateway_errors_total", reason="overloaded"
    )
    counted_429 = after.value("bge_gateway_requests_total", route="/v1/embeddings", status="429") - before.value(
        "bge_gateway_requests_total", route="/v1/embeddings", status="429"
    )
    assert overloaded == counted_429 == len(refused)
    seconds_429 = [s for _, _, s in refused]
    print(
        f"\nburst of {BURST} at capacity {CAPACITY}: {len(accepted)} accepted, {len(refused)} refused; "
        f"429 latency median {statistics.median(seconds_429) * 1000:.0f} ms, max {max(seconds_429) * 1000:.0f} ms"
    )

    # Coming back after Retry-After: every refused request completes, correctly (bounded rounds).
    waiting = [i for i, _, _ in refused]
    rounds = 0
    while waiting and rounds < MAX_RETRY_ROUNDS:
        rounds += 1
        time.sleep(float(refused[0][1].headers["retry-after"]))
        retried = asyncio.run(_post_all(url, [requests[i] for i in waiting]))
        for i, response in zip(list(waiting), retried, strict=True):
            if response.status_code == 200:
                assert_vectors(response, requests[i], expected)
                waiting.remove(i)
            else:
                assert response.status_code == 429
    assert not waiting, f"{len(waiting)} requests still refused after {MAX_RETRY_ROUNDS} rounds"
    print(f"every refused request served after {rounds} Retry-After round(s)")


async def _post_all(url: str, requests: list[list[str]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return list(await asyncio.gather(*[client.post(url, json=body(texts)) for texts in requests]))


WIDE_CAPACITY = 32


@pytest.fixture(scope="module")
def wide_gateway(start_gateway_for: GatewayFactory) -> Gateway:
    return start_gateway_for(MAX_CONCURRENT_REQUESTS=str(WIDE_CAPACITY))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def burst_on_open_connections(url: str, bodies: list[bytes]) -> list[tuple[int, float]]:
    """Each body posted on its own already-open connection, all written in one tight loop; per request its
    status and the seconds from its last byte written to its answer's first byte. (An HTTP client library
    would time its own event loop too: with 320 requests in flight in one Python process, most of the
    latency it reports is the client's.)"""
    host, port = url.removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port)), timeout=60) for _ in bodies]
    sent: dict[int, float] = {}
    answers: dict[int, tuple[int, float]] = {}
    with selectors.DefaultSelector() as selector:
        for i, (sock, payload) in enumerate(zip(socks, bodies, strict=True)):
            head = (
                f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            ).encode()
            sock.sendall(head + payload)
            sent[i] = time.monotonic()
            selector.register(sock, selectors.EVENT_READ, i)
        deadline = time.monotonic() + 120
        while len(answers) < len(bodies) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                i = key.data
                first = key.fileobj.recv(64)  # type: ignore[union-attr]
                answers[i] = (int(first.split(b" ", 2)[1]) if first else 0, time.monotonic() - sent[i])
                selector.unregister(key.fileobj)
    for sock in socks:
        sock.close()
    return [answers.get(i, (0, float("inf"))) for i in range(len(bodies))]


def test_429_stays_fast_at_10x_a_wider_capacity(wide_gateway: Gateway) -> None:
    """10 x 32 requests at once, each 64 texts: the refusals are decided before their bodies are parsed
    (`AdmissionMiddleware`), so they do not wait behind the parsing and answering of the admitted ones."""
    bodies = [orjson.dumps(body(texts_of(f"宽突发{r}", 64))) for r in range(10 * WIDE_CAPACITY)]
    cpu_before = cpu_seconds(wide_gateway.process.pid)
    answers = burst_on_open_connections(wide_gateway.url, bodies)
    gateway_cpu = cpu_seconds(wide_gateway.process.pid) - cpu_before
    statuses = {status for status, _ in answers}
    refused = sorted(seconds for status, seconds in answers if status == 429)
    served = sorted(seconds for status, seconds in answers if status == 200)
    print(
        f"\nburst of {len(bodies)} x 64 texts at capacity {WIDE_CAPACITY}, on open connections: {len(served)} "
        f"served (median {statistics.median(served) * 1000:.0f} ms), {len(refused)} refused: 429 median "
        f"{statistics.median(refused) * 1000:.0f} ms, p90 {refused[int(len(refused) * 0.9)] * 1000:.0f} ms, "
        f"max {refused[-1] * 1000:.0f} ms; gateway CPU {gateway_cpu * 1000:.0f} ms in all "
        f"({gateway_cpu / len(bodies) * 1000:.2f} ms per request)"
    )
    assert statuses <= {200, 429}, statuses
    assert len(refused) >= len(bodies) // 2
    assert statistics.median(refused) < 1.0  # generous: measured figures are in RELIABILITY.md
