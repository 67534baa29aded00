"""Connection hygiene of a real gateway process (issue 18, item 4): idle, half-sent and slow connections are
closed after the documented timeouts, oversized headers are refused, and the connection cap answers 503
while everyone else keeps being served. Raw sockets, because an HTTP client would not misbehave."""

from __future__ import annotations

import contextlib
import socket
import time

import httpx
import pytest
from gateway.gateway_process import SERVED_NAME, Gateway
from reliability_support import MIB, GatewayFactory, Scrape, body, wait_until

from bge_deploy.serving.process import rss_bytes

READ_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 0.5
MAX_CONNECTIONS = 40
SLACK_S = 1.5  # what a busy 2-core box may add to a timer


@pytest.fixture(scope="module")
def strict_gateway(start_gateway_for: GatewayFactory) -> Gateway:
    return start_gateway_for(
        READ_TIMEOUT_S=str(READ_TIMEOUT_S),
        KEEP_ALIVE_TIMEOUT_S=str(KEEP_ALIVE_S),
        MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )


def connect(gateway: Gateway) -> socket.socket:
    host, port = gateway.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def closed_after(sock: socket.socket, start: float, limit_s: float) -> float:
    """Seconds from `start` until the server closed `sock` (reads until EOF; fails past `limit_s`)."""
    sock.settimeout(limit_s)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        pytest.fail(f"the gateway kept the connection open past {limit_s} s")
    return time.monotonic() - start


def test_a_connection_that_sends_nothing_is_closed_after_the_read_timeout(strict_gateway: Gateway) -> None:
    start = time.monotonic()
    with connect(strict_gateway) as sock:
        took = closed_after(sock, start, READ_TIMEOUT_S + SLACK_S)
    print(f"\nidle connection closed after {took:.2f} s (read_timeout_s={READ_TIMEOUT_S})")
    assert took >= READ_TIMEOUT_S * 0.9
    assert "whose request did not arrive within" in strict_gateway.log()


def test_slowloris_headers_a_byte_at_a_time_are_cut_off(strict_gateway: Gateway) -> None:
    """Each byte well inside any per-read timeout, the whole far past the read deadline."""
    start = time.monotonic()
    with connect(strict_gateway) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
        try:
            for byte in b"X-Slow: " + b"a" * 100:
                sock.send(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - start > READ_TIMEOUT_S + SLACK_S:
                    pytest.fail("a header trickled in for longer than the read timeout allows")
        except (BrokenPipeError, ConnectionResetError):
            pass
        took = closed_after(sock, start, READ_TIMEOUT_S + SLACK_S)
    print(f"\nslowloris connection closed after {took:.2f} s")


def test_a_half_sent_body_is_cut_off_and_counted_as_a_client_that_left(strict_gateway: Gateway) -> None:
    metrics = f"{strict_gateway.url}/metrics"

    def left() -> float:
        return Scrape.of(metrics).value("bge_gateway_requests_total", route="/v1/embeddings", status="499")

    before = left()
    start = time.monotonic()
    with connect(strict_gateway) as sock:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"input": "'
        )
        took = closed_after(sock, start, READ_TIMEOUT_S + SLACK_S)
    print(f"\nhalf-sent body: connection closed after {took:.2f} s")
    wait_until(lambda: left() == before + 1, timeout_s=5)


def test_keep_alive_connections_are_closed_when_idle_after_an_answer(strict_gateway: Gateway) -> None:
    with connect(strict_gateway) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(65536)
        start = time.monotonic()
        assert answer.startswith(b"HTTP/1.1 200")
        took = closed_after(sock, start, KEEP_ALIVE_S + SLACK_S)
    print(f"\nkeep-alive connection closed {took:.2f} s after its answer (keep_alive_timeout_s={KEEP_ALIVE_S})")


@pytest.mark.parametrize("shape", ["one 8 MiB header", "100,000 headers"])
def test_oversized_headers_are_refused_at_once_without_growing_memory(strict_gateway: Gateway, shape: str) -> None:
    before = rss_bytes(strict_gateway.process.pid)
    if shape == "one 8 MiB header":
        headers = b"X-Big: " + b"a" * (8 * MIB) + b"\r\n"
    else:
        headers = b"".join(b"X-%d: 1\r\n" % i for i in range(100_000))
    start = time.monotonic()
    with connect(strict_gateway) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused while still sending
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
        took = closed_after(sock, start, 5)
    growth = rss_bytes(strict_gateway.process.pid) - before
    print(f"\n{shape}: answered {answer[:12]!r}, closed after {took:.2f} s, gateway RSS {growth / MIB:+.1f} MiB")
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:80]
    assert growth < 16 * MIB
    assert httpx.get(f"{strict_gateway.url}/health", timeout=10).status_code == 200


def test_past_the_connection_cap_requests_get_503_and_are_served_again_after(strict_gateway: Gateway) -> None:
    held = [connect(strict_gateway) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        start = time.monotonic()
        refused = httpx.post(f"{strict_gateway.url}/v1/embeddings", json=body(["连接上限"]), timeout=10)
        refused_s = time.monotonic() - start
    finally:
        for sock in held:
            sock.close()
    print(f"\n{MAX_CONNECTIONS} connections held: a new request got {refused.status_code} in {refused_s * 1000:.0f} ms")
    assert refused.status_code == 503 and refused_s < 1.0
    time.sleep(0.2)
    served = httpx.post(f"{strict_gateway.url}/v1/embeddings", json={"model": SERVED_NAME, "input": "之后"}, timeout=30)
    assert served.status_code == 200
