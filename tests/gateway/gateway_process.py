"""A real gateway process (`python -m bge_client.gateway`) for the tests, configured by env vars only.

A thin wrapper over the deploy helper every other caller uses (`bge_deploy.serving.gateway`); a module
rather than conftest contents, so test modules can import its names unambiguously.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from bge_deploy.serving.gateway import GatewayProcess
from bge_deploy.serving.process import ProcessError, free_port

SERVED_NAME = "bge-large-zh-v1.5"
"""What the OpenAI snippets ask for; the test Triton's model has another name, mapped by the gateway."""

API_KEY = "test-key-123"

__all__ = ["API_KEY", "SERVED_NAME", "Gateway", "free_port", "start_gateway", "stop_gateway"]


@dataclass
class Gateway:
    url: str
    managed: GatewayProcess
    log_path: Path

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.managed.popen is not None
        return self.managed.popen

    def log(self) -> str:
        return self.managed.log()


def start_gateway(log_dir: Path, settings: dict[str, str], healthy: bool = True, timeout_s: float = 30.0) -> Gateway:
    """Start a gateway with ``BGE_GATEWAY_<KEY>`` = value for each setting; wait for /health to be 200 (or to
    answer at all if not `healthy`)."""
    port = free_port()
    log_path = log_dir / f"gateway-{port}.log"
    managed = GatewayProcess(settings, port=port, log_path=log_path).start()
    try:
        managed.wait_healthy(timeout_s, healthy=healthy)
    except ProcessError as exc:
        managed.stop(10)
        raise RuntimeError(str(exc)) from None
    return Gateway(managed.url, managed, log_path)


def stop_gateway(gateway: Gateway) -> None:
    gateway.managed.stop(10)
