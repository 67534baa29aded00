"""Start and stop a real gateway process (`python -m bge_client.gateway`), configured by env vars only.

A helper module rather than conftest contents, so test modules can import its names unambiguously.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

SERVED_NAME = "bge-large-zh-v1.5"
"""What the OpenAI snippets ask for; the test Triton's model has another name, mapped by the gateway."""

API_KEY = "test-key-123"


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(log_dir: Path, settings: dict[str, str], healthy: bool = True, timeout_s: float = 30.0) -> Gateway:
    """Start a gateway subprocess; wait for /health to be 200 (or to answer at all if not `healthy`)."""
    port = free_port()
    env = {
        **os.environ,
        "BGE_GATEWAY_HOST": "127.0.0.1",
        "BGE_GATEWAY_PORT": str(port),
        **{f"BGE_GATEWAY_{k}": v for k, v in settings.items()},
    }
    log_path = log_dir / f"gateway-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bge_client.gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{gateway.log()}")
        try:
            status = httpx.get(f"{gateway.url}/health", timeout=2.0).status_code
            if status == 200 or not healthy:
                return gateway
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_gateway(gateway)
    raise RuntimeError(f"gateway not healthy after {timeout_s}s:\n{gateway.log()}")


def stop_gateway(gateway: Gateway) -> None:
    gateway.process.terminate()
    try:
        gateway.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        gateway.process.wait()
