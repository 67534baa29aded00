"""Crash visibility and recovery, on a `bge-triton` of the tests' own (never the shared session Triton).

Triton 2.51 neither restarts a Python backend stub that dies nor marks its model not ready; the
launcher's watchdog does the noticing: it restarts tritonserver, whose HTTP port (the readiness probe)
refuses connections at once, and says why in one line. The gateway turns the outage into 503s with the
reason, fast, and serves again as soon as the new server is ready.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from gateway.gateway_process import SERVED_NAME, Gateway
from openai import OpenAI
from reliability_support import (
    GatewayFactory,
    LaunchedTriton,
    Scrape,
    assert_same_vectors,
    assert_vectors,
    body,
    launch_triton,
    reference_vectors,
    repository_of,
    wait_until,
)
from support import TritonHandle as SharedTriton

from bge_client import EmbeddingClient
from bge_client.gateway.errors import UNAVAILABLE_RETRY_AFTER_S

NOT_READY_S = 2.0
GRACE_S = 1.0
TEXTS = ["崩溃之后还是同一个向量", "same vector after a crash"]


@pytest.fixture(scope="module")
def launched(tiny_repository: Path) -> Iterator[LaunchedTriton]:
    server = launch_triton(
        tiny_repository,
        "--exit-timeout",
        "5",
        "--watchdog-grace-s",
        str(GRACE_S),
        "--watchdog-not-ready-s",
        str(NOT_READY_S),
    )
    yield server
    assert server.stop() == 0, server.text()


@pytest.fixture(scope="module")
def crash_gateway(start_gateway_for: GatewayFactory, launched: LaunchedTriton) -> Gateway:
    return start_gateway_for(triton_url=launched.grpc_url)


@pytest.fixture(scope="module")
def expected(launched: LaunchedTriton, triton: SharedTriton) -> dict[str, np.ndarray]:
    return reference_vectors(launched.grpc_url, triton.model_name, TEXTS, triton.max_batch_size)


def health(gateway: Gateway) -> httpx.Response:
    return httpx.get(f"{gateway.url}/health", timeout=10)


def embed(gateway: Gateway) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = httpx.post(f"{gateway.url}/v1/embeddings", json=body(TEXTS), timeout=30)
    return response, time.monotonic() - start


def recovered(gateway: Gateway, expected: dict[str, np.ndarray], since: float) -> float:
    """Seconds from `since` until the gateway is healthy again; then its answer is the same vector."""
    wait_until(lambda: health(gateway).status_code == 200, timeout_s=60, poll_s=0.1)
    took = time.monotonic() - since
    response, _ = embed(gateway)
    assert_vectors(response, TEXTS, expected)
    return took


@pytest.mark.parametrize("role", ["tokenizer", "encoder"])
def test_killed_stub_is_visible_at_once_and_recovers(
    launched: LaunchedTriton, crash_gateway: Gateway, expected: dict[str, np.ndarray], triton: SharedTriton, role: str
) -> None:
    model = f"{triton.model_name}-{role}"
    recovered(crash_gateway, expected, time.monotonic())  # serving before (and after the previous case)
    stub = launched.stub_of(model)  # one dead stub is enough
    killed = time.monotonic()
    os.kill(stub.pid, signal.SIGKILL)

    not_ready_s = wait_until(lambda: not launched.model_ready(triton.model_name), timeout_s=5, poll_s=0.02)
    refused = wait_until(lambda: health(crash_gateway).status_code == 503, timeout_s=5, poll_s=0.02)
    reason = health(crash_gateway)
    response, seconds = embed(crash_gateway)  # during the outage: a fast 503, not a hang
    said = launched.wait_for_line(f"stub of model '{model}' (pid {stub.pid}) killed by SIGKILL", 5, after=killed)
    recovery_s = recovered(crash_gateway, expected, killed)
    print(
        f"\n{role} stub killed: model not ready after {not_ready_s:.2f} s, gateway /health 503 after "
        f"{refused:.2f} s, a request during the outage got {response.status_code} in {seconds * 1000:.0f} ms, "
        f"serving again after {recovery_s:.1f} s"
    )
    assert not_ready_s < 2.0 and refused < 2.0
    assert reason.status_code == 503 and "unavailable" in reason.json()["error"]["message"]
    assert response.status_code == 503 and seconds < 1.0
    assert said - killed < 2.0
    launched.wait_for_line("watchdog: tritonserver ready again", timeout_s=10, after=killed)
    assert not Path("/dev/shm", stub.shm_region).exists()
    assert stub.pid not in {s.pid for s in launched.stubs()}


def test_frozen_server_is_restarted(
    launched: LaunchedTriton, crash_gateway: Gateway, expected: dict[str, np.ndarray]
) -> None:
    """A tritonserver that stops answering (SIGSTOP) is restarted after the watchdog's not-ready time."""
    recovered(crash_gateway, expected, time.monotonic())
    old_stubs = launched.stubs()
    frozen = time.monotonic()
    os.kill(launched.tritonserver_pid(), signal.SIGSTOP)
    said = launched.wait_for_line("has not been ready for", timeout_s=NOT_READY_S + 10, after=frozen)
    recovery_s = recovered(crash_gateway, expected, frozen)
    print(f"\nfrozen tritonserver: watchdog acted after {said - frozen:.1f} s, serving again after {recovery_s:.1f} s")
    assert NOT_READY_S <= said - frozen < NOT_READY_S + 4  # + up to 2 checks of 1 s
    assert not any(stub.is_running() for stub in old_stubs)  # the old server's stubs did not outlive it
    assert not any(Path("/dev/shm", stub.shm_region).exists() for stub in old_stubs)


def test_the_openai_sdk_rides_out_an_encoder_crash(
    launched: LaunchedTriton, crash_gateway: Gateway, expected: dict[str, np.ndarray], triton: SharedTriton
) -> None:
    """A 503 during the restart says when to come back (`Retry-After`), and the openai SDK waits that long
    before each of its retries: a caller with the SDK's defaults who embeds during an encoder crash gets its
    vectors, a few seconds late, instead of an error after the SDK's own 0.5 s and 1 s backoff."""
    client = OpenAI(base_url=f"{crash_gateway.url}/v1", api_key="EMPTY")  # max_retries: the SDK's default (2)
    recovered(crash_gateway, expected, time.monotonic())

    def refused() -> float:  # the gateway's 503s on the embeddings route (not /health's)
        scrape = Scrape.of(f"{crash_gateway.url}/metrics")
        return scrape.value("bge_gateway_requests", route="/v1/embeddings", status="503")

    stub = launched.stub_of(f"{triton.model_name}-encoder")
    killed = time.monotonic()
    os.kill(stub.pid, signal.SIGKILL)
    wait_until(lambda: health(crash_gateway).status_code == 503, timeout_s=5, poll_s=0.02)
    refused_before = refused()
    sent = time.monotonic()
    answer = client.embeddings.create(model=SERVED_NAME, input=TEXTS)
    took = time.monotonic() - sent
    refusals = refused() - refused_before
    print(
        f"\nopenai SDK call sent {sent - killed:.2f} s after the encoder's kill: vectors after {took:.1f} s, "
        f"{refusals:g} refusal(s)"
    )
    assert_same_vectors([d.embedding for d in answer.data], TEXTS, expected)
    assert refusals >= 1  # it was refused during the outage, and came back when told to
    assert took >= UNAVAILABLE_RETRY_AFTER_S - 0.1
    launched.wait_for_line("watchdog: tritonserver ready again", timeout_s=10, after=killed)


def test_the_thin_client_rides_out_an_encoder_crash(
    launched: LaunchedTriton, crash_gateway: Gateway, expected: dict[str, np.ndarray], triton: SharedTriton
) -> None:
    """Straight to Triton over gRPC, `EmbeddingClient`'s default retries (dead stub, then a refused port while
    the watchdog restarts tritonserver) outlast the restart: a call made during an encoder crash returns the
    same vectors, late, instead of an error."""
    recovered(crash_gateway, expected, time.monotonic())
    stub = launched.stub_of(f"{triton.model_name}-encoder")
    with EmbeddingClient(launched.grpc_url, "grpc", triton.model_name) as client:
        client.model_facts()  # its config read before the crash, as a long-lived caller's would be
        killed = time.monotonic()
        os.kill(stub.pid, signal.SIGKILL)
        vectors = client.embed(TEXTS)
        took = time.monotonic() - killed
    print(f"\nthin client call made at the encoder's kill: vectors after {took:.1f} s")
    assert_same_vectors(vectors, TEXTS, expected)
    assert launched.line_time("watchdog: tritonserver ready again", after=killed) is not None  # it did restart


@pytest.fixture(scope="module")
def minilm_repository(triton: SharedTriton, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM alone (exported in bge-large's default layout: one encoder instance of 2 lanes, batches overlapped)."""
    return repository_of(triton.repository, triton.minilm.name, tmp_path_factory.mktemp("minilm-repository"))


def test_a_killed_stub_with_a_batch_in_its_window_answers_everyone_within_its_grace(
    minilm_repository: Path, triton: SharedTriton
) -> None:
    """The overlapped encoder holds the batch it is finishing and the next one, whose ``execute`` has returned:
    when its stub dies, Triton never answers those (their response senders died with it) and would report them
    in flight for the whole 5 s grace. After a stub's death the watchdog waits only its 1 s dead-stub grace, so
    every request in flight at the kill gets its answer (an error) within ~2 s, and the server serves again."""
    name = triton.minilm.name
    server = launch_triton(minilm_repository, "--exit-timeout", "10", "--watchdog-grace-s", "5")
    try:
        texts = [f"窗口里的批次 {i} " + "word " * 120 for i in range(8)]
        payload = {"inputs": [{"name": "text", "shape": [8, 1], "datatype": "BYTES", "data": texts}]}
        url = f"{server.http_url}/v2/models/{name}/infer"
        outcomes: list[tuple[float, float, int | str]] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    start = time.monotonic()
                    try:
                        status: int | str = http.post(url, json=payload).status_code
                    except httpx.TransportError as exc:
                        status = type(exc).__name__
                    outcomes.append((start, time.monotonic(), status))

        clients = [threading.Thread(target=client) for _ in range(8)]
        for thread in clients:
            thread.start()
        wait_until(lambda: sum(o[2] == 200 for o in outcomes) >= 16, timeout_s=60, poll_s=0.05)
        (stub,) = [s for s in server.stubs() if s.model == f"{name}-encoder"]
        killed = time.monotonic()
        os.kill(stub.pid, signal.SIGKILL)
        time.sleep(0.5)
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
        in_flight = [(end - killed, status) for start, end, status in outcomes if start < killed < end]
        wait_until(lambda: server.model_ready(name), timeout_s=60, poll_s=0.05)
        recovery_s = time.monotonic() - killed
        answer = httpx.post(url, json=payload, timeout=30)
        print(f"\nin flight at the kill (s after it, answer): {in_flight}; ready again {recovery_s:.1f} s after")
        assert in_flight, "the load had nothing in flight at the kill"
        assert max(seconds for seconds, _ in in_flight) < 3.0, in_flight  # 5 s and more without the short grace
        assert answer.status_code == 200, answer.text
        server.wait_for_line("watchdog: tritonserver ready again", timeout_s=10, after=killed)
    finally:
        server.stop()


def test_two_lanes_answering_at_once_never_crash_the_server(minilm_repository: Path, triton: SharedTriton) -> None:
    """Triton 2.51's Python backend crashes tritonserver itself (SIGSEGV in libtriton_python.so) when two threads
    of one stub answer at once: each lane finishing a batch of its own sent its responses and counts together, and
    bge-small under 32 clients of single short texts lost its server every ~15 s (6 crashes in 2 min). The
    encoder answers one batch at a time: 32 clients x 20 s of single texts against MiniLM in the same layout
    (one instance, 2 lanes, batches overlapped), every request answered and the server never restarted."""
    name = triton.minilm.name
    server = launch_triton(minilm_repository)
    try:
        pid = server.tritonserver_pid()
        url = f"{server.http_url}/v2/models/{name}/infer"
        outcomes: list[int | str] = []
        deadline = time.monotonic() + 20

        def client(number: int) -> None:
            with httpx.Client(timeout=30) as http:
                sent = 0
                while time.monotonic() < deadline:
                    text = f"短句 {number}-{sent}"
                    payload = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}
                    try:
                        outcomes.append(http.post(url, json=payload).status_code)
                    except httpx.TransportError as exc:
                        outcomes.append(type(exc).__name__)
                    sent += 1

        clients = [threading.Thread(target=client, args=(n,)) for n in range(32)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=90)
        failed = [o for o in outcomes if o != 200]
        print(f"\n{len(outcomes)} requests in 20 s, {len(failed)} failed")
        assert not failed, f"{len(failed)} of {len(outcomes)} failed, e.g. {failed[:5]}:\n{server.text()[-3000:]}"
        assert len(outcomes) >= 1000, len(outcomes)  # enough answers at once for the crash to have shown
        assert "exited on its own" not in server.text() and server.tritonserver_pid() == pid
    finally:
        server.stop()
