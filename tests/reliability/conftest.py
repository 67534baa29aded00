"""Fixtures of the reliability tests: gateways in front of the session Triton, and Tritons of their own.

Non-destructive tests use the session `triton` (tests/conftest.py) behind gateways started here with
one setting changed. Tests that stop, crash or freeze a server launch their own `bge-triton` on a copy
of the tiny bge model, so the shared server is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway.gateway_process import SERVED_NAME, Gateway, start_gateway, stop_gateway
from reliability_support import GatewayFactory, repository_of
from support import TritonHandle as SharedTriton


@pytest.fixture(scope="session")
def reliability_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability-logs")


@pytest.fixture(scope="module")
def start_gateway_for(triton: SharedTriton, reliability_logs: Path) -> Iterator[GatewayFactory]:
    """Start gateways (by default in front of the session Triton) with `BGE_GATEWAY_*` settings; all are
    stopped when the module ends."""
    started: list[Gateway] = []

    def start(triton_url: str | None = None, healthy: bool = True, **settings: str) -> Gateway:
        env = {
            "TRITON_URL": triton_url or triton.grpc_url,
            "MODEL_NAME": triton.model_name,
            "SERVED_MODEL_NAME": SERVED_NAME,
            **settings,
        }
        gateway = start_gateway(reliability_logs, env, healthy=healthy)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            stop_gateway(gateway)


@pytest.fixture(scope="session")
def tiny_repository(triton: SharedTriton, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding only the tiny bge model (ensemble, tokenizer, encoder), for Tritons
    launched by the tests themselves: loads in about 2 s."""
    return repository_of(triton.repository, triton.model_name, tmp_path_factory.mktemp("tiny-repository"))
