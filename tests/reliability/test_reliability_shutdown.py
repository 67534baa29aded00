"""Graceful shutdown under steady load: SIGTERM to the gateway, and to `bge-triton`.

New requests are refused (a refused connection, or a fast 503), requests in flight complete with
correct vectors, the process exits within its timeout, and no accepted request is lost: the gateway's
own count of answered requests (its shutdown log line) equals the answers its clients received.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from gateway.gateway_process import Gateway
from reliability_support import (
    GatewayFactory,
    Outcome,
    assert_vectors,
    launch_triton,
    reference_vectors,
    steady_load,
    texts_of,
)
from support import TritonHandle as SharedTriton

WORKERS = 8
LOAD_S = 4.0
TERM_AFTER_S = 1.5
GATEWAY_SHUTDOWN_TIMEOUT_S = 10
TRITON_EXIT_TIMEOUT_S = 15
POOL = texts_of("停机", 160, repeat=6)


def make_texts(worker: int, i: int) -> list[str]:
    """8 texts, or 40 (three Triton calls) every fourth request, from the pool (so references exist)."""
    count = 40 if i % 4 == 3 else 8
    start = (worker * 17 + i * 8) % (len(POOL) - count)
    return POOL[start : start + count]


def run_load_and_signal(
    url: str, process: subprocess.Popen[bytes] | subprocess.Popen[str], exit_timeout_s: float
) -> tuple[list[Outcome], float, float]:
    """Steady load; SIGTERM to `process` after TERM_AFTER_S. Outcomes, when the signal went, exit seconds."""
    signalled: dict[str, float] = {}

    def terminate() -> None:
        time.sleep(TERM_AFTER_S)
        signalled["at"] = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=exit_timeout_s + 10)
        signalled["exited"] = time.monotonic()

    thread = threading.Thread(target=terminate)
    thread.start()
    outcomes = asyncio.run(
        steady_load(url, make_texts, WORKERS, LOAD_S, max_per_worker=400, fresh_connections=True, timeout_s=20)
    )
    thread.join(timeout=exit_timeout_s + 15)
    assert "exited" in signalled, "the process did not exit"
    return outcomes, signalled["at"], signalled["exited"] - signalled["at"]


def summarize(outcomes: list[Outcome]) -> Counter[str]:
    return Counter(str(o.status) if o.status is not None else o.error or "?" for o in outcomes)


@pytest.fixture(scope="module")
def references(triton: SharedTriton) -> dict[str, np.ndarray]:
    return reference_vectors(triton.grpc_url, triton.model_name, POOL, triton.max_batch_size)


def test_sigterm_to_the_gateway_under_load(
    start_gateway_for: GatewayFactory, triton: SharedTriton, references: dict[str, np.ndarray]
) -> None:
    gateway: Gateway = start_gateway_for(SHUTDOWN_TIMEOUT_S=str(GATEWAY_SHUTDOWN_TIMEOUT_S))
    outcomes, term_at, exit_s = run_load_and_signal(gateway.url, gateway.process, GATEWAY_SHUTDOWN_TIMEOUT_S)
    counts = summarize(outcomes)
    in_flight = [o for o in outcomes if o.start < term_at < o.end]
    after = [o for o in outcomes if o.start > term_at + 0.2]
    answered = re.search(r"stopped: answered .*/v1/embeddings: (\d+)", gateway.log())
    print(
        f"\ngateway SIGTERM: exited in {exit_s:.2f} s (timeout {GATEWAY_SHUTDOWN_TIMEOUT_S} s); "
        f"outcomes {dict(counts)}; {len(in_flight)} in flight at SIGTERM, all "
        f"{Counter(o.status for o in in_flight)}"
    )
    assert gateway.process.returncode in (0, -signal.SIGTERM), gateway.log()[-2000:]  # uvicorn re-raises it
    assert exit_s < GATEWAY_SHUTDOWN_TIMEOUT_S
    assert in_flight, "no request was in flight when SIGTERM came; the test proves nothing"
    for outcome in outcomes:
        if outcome.response is not None:
            assert_vectors(outcome.response, outcome.texts, references)  # every answer is a correct 200
    assert after and all(o.error == "ConnectError" for o in after)  # refused, not dropped
    # Around the signal a connection may be reset unread (queued in the kernel as the listener closed):
    # refused too, and the count below shows the gateway never took it.
    assert {o.error for o in outcomes if o.response is None} <= {"ConnectError", "ReadError", "RemoteProtocolError"}
    assert answered is not None, gateway.log()[-2000:]
    assert int(answered.group(1)) == counts["200"]  # nothing it accepted went unanswered


def test_sigterm_to_bge_triton_under_load(
    start_gateway_for: GatewayFactory, tiny_repository: Path, triton: SharedTriton
) -> None:
    launched = launch_triton(tiny_repository, "--exit-timeout", str(TRITON_EXIT_TIMEOUT_S))
    try:
        references = reference_vectors(launched.grpc_url, triton.model_name, POOL, triton.max_batch_size)
        # Every call straight into Triton: what is tested is Triton's drain. With the fair share's default (two
        # full batches in Triton) a chunk can still wait in the gateway at SIGTERM and is then refused with a
        # 503 once Triton goes unavailable, correct but not what "accepted by Triton" below means.
        gateway = start_gateway_for(triton_url=launched.grpc_url, MAX_INFLIGHT_TOKENS=str(10**9))
        outcomes, term_at, exit_s = run_load_and_signal(gateway.url, launched.process, TRITON_EXIT_TIMEOUT_S)
    finally:
        launched.stop()
    counts = summarize(outcomes)
    # In flight = sent before SIGTERM and answered after it. With 8 closed-loop clients some always are;
    # one sent a moment before the signal may not have reached Triton yet and get a 503, but one sent
    # 100 ms before surely had, so it must be answered (nothing accepted is lost).
    in_flight = [o for o in outcomes if o.start < term_at < o.end]
    accepted_before = [o for o in in_flight if o.start < term_at - 0.1]
    refused = [o for o in outcomes if o.status == 503]
    print(
        f"\nbge-triton SIGTERM: exited in {exit_s:.2f} s (exit timeout {TRITON_EXIT_TIMEOUT_S} s); outcomes "
        f"{dict(counts)}; {len(in_flight)} in flight at SIGTERM, all {Counter(o.status for o in in_flight)}; "
        f"503s answered within {max((o.seconds for o in refused), default=0) * 1000:.0f} ms"
    )
    assert launched.process.returncode == 0, launched.text()
    assert "SIGTERM received, draining" in launched.text() and "tritonserver stopped (exit code 0)" in launched.text()
    assert exit_s < TRITON_EXIT_TIMEOUT_S
    assert set(counts) <= {"200", "503"}, counts
    assert in_flight and any(o.status == 200 for o in in_flight), Counter(o.status for o in in_flight)
    assert all(o.status == 200 for o in accepted_before)
    for outcome in outcomes:
        if outcome.status == 200:
            assert outcome.response is not None
            assert_vectors(outcome.response, outcome.texts, references)
    # New work is refused at once, not hung: nearly all within 1 s. One that reached the ensemble as the drain
    # began is refused when the batch in flight ends (seen at 1.02-1.12 s in full-suite runs on a busy box),
    # still far inside the client's 20 s and Triton's exit timeout.
    slow = [round(o.seconds, 2) for o in refused if o.seconds >= 1.0]
    assert refused and len(slow) <= max(1, len(refused) // 20), slow
    assert all(o.seconds < 5.0 for o in refused), slow
    assert all(o.start > term_at - 0.1 for o in refused)
    health = httpx.get(f"{gateway.url}/health", timeout=10)
    assert health.status_code == 503 and "unavailable" in health.json()["error"]["message"]
