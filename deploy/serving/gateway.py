"""The OpenAI gateway as a child process (`python -m bge_client.gateway`), configured as deployed: by
``BGE_GATEWAY_<FIELD>`` variables only."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from bge_deploy.serving.process import ManagedProcess, free_port

GATEWAY_MODULE = "bge_client.gateway"
ENV_PREFIX = "BGE_GATEWAY_"


def gateway_env(fields: Mapping[str, object], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment) plus ``BGE_GATEWAY_<FIELD>`` for each field of GatewaySettings."""
    return {**(os.environ if base is None else base), **{ENV_PREFIX + k.upper(): str(v) for k, v in fields.items()}}


class GatewayProcess(ManagedProcess):
    """A gateway on ``host:port`` (a free loopback port by default) with ``fields`` as its settings."""

    def __init__(
        self,
        fields: Mapping[str, object],
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        env = gateway_env({"host": host, "port": self.port, **fields}, base_env)
        super().__init__("the gateway", [sys.executable, "-m", GATEWAY_MODULE], env=env, log_path=log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float, healthy: bool = True) -> GatewayProcess:
        """Until /health is 200 (or answers at all, when ``healthy`` is False: Triton may still be starting)."""
        self.wait_http(f"{self.url}/health", timeout_s, any_answer=not healthy)
        return self
