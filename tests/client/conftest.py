"""Fixtures for the thin client's tests: Triton's address for either protocol."""

from __future__ import annotations

import pytest
from support import TritonHandle as TritonLike


@pytest.fixture(params=["grpc", "http"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def triton_url(triton: TritonLike, protocol: str) -> str:
    """host:port of the session's real tritonserver for `protocol`."""
    return triton.grpc_url if protocol == "grpc" else triton.http_url.removeprefix("http://")
