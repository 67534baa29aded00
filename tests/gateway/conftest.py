"""Real gateway processes in front of the session's real tritonserver.

Each fixture starts one subprocess configured only through `BGE_GATEWAY_*` env vars, waits until it
answers /health, yields it, and terminates it. Besides the main gateway there are a few with one
setting changed, to provoke each error status with a real request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_process import API_KEY, SERVED_NAME, Gateway, free_port, start_gateway, stop_gateway
from support import TritonHandle as TritonLike


@pytest.fixture(scope="session")
def gateway_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-logs")


def _triton_settings(triton: TritonLike) -> dict[str, str]:
    return {"TRITON_URL": triton.grpc_url, "MODEL_NAME": triton.model_name, "SERVED_MODEL_NAME": SERVED_NAME}


@pytest.fixture(scope="session")
def gateway(triton: TritonLike, gateway_logs: Path) -> Iterator[Gateway]:
    """The main gateway, default settings, serving the tiny bge model as `bge-large-zh-v1.5`."""
    running = start_gateway(gateway_logs, _triton_settings(triton))
    yield running
    stop_gateway(running)


@pytest.fixture(scope="session")
def restricted_gateway(triton: TritonLike, gateway_logs: Path) -> Iterator[Gateway]:
    """API key, 4 KiB body limit, Matryoshka sizes 16 and 32."""
    running = start_gateway(
        gateway_logs,
        {**_triton_settings(triton), "API_KEY": API_KEY, "MAX_BODY_BYTES": "4096", "MATRYOSHKA_DIMS": "16,32"},
    )
    yield running
    stop_gateway(running)


@pytest.fixture(scope="session")
def burst_gateway(triton: TritonLike, gateway_logs: Path) -> Iterator[Gateway]:
    """Admits one embedding request at a time (a concurrent second one gets 429), but sends all of its
    chunks to Triton at once (enough to overflow Triton's queue): no fair share holding them back."""
    settings = {"MAX_CONCURRENT_REQUESTS": "1", "CHUNK_CONCURRENCY": "1000", "MAX_INFLIGHT_TOKENS": str(10**12)}
    running = start_gateway(gateway_logs, {**_triton_settings(triton), **settings})
    yield running
    stop_gateway(running)


@pytest.fixture(scope="session")
def impatient_gateway(triton: TritonLike, gateway_logs: Path) -> Iterator[Gateway]:
    """A 1 ms deadline on inference calls: every embedding request runs past it (504)."""
    running = start_gateway(gateway_logs, {**_triton_settings(triton), "REQUEST_TIMEOUT_S": "0.001"})
    yield running
    stop_gateway(running)


@pytest.fixture(scope="session")
def raw_ids_gateway(triton: TritonLike, gateway_logs: Path) -> Iterator[Gateway]:
    """Takes token-id rows as given (the operator's escape hatch from the token-id rule)."""
    running = start_gateway(gateway_logs, {**_triton_settings(triton), "RAW_TOKEN_IDS": "true"})
    yield running
    stop_gateway(running)


@pytest.fixture(scope="session")
def orphan_gateway(gateway_logs: Path) -> Iterator[Gateway]:
    """Pointed at a closed port: Triton is down (503). Needs no Triton at all."""
    running = start_gateway(gateway_logs, {"TRITON_URL": f"127.0.0.1:{free_port()}"}, healthy=False)
    yield running
    stop_gateway(running)
