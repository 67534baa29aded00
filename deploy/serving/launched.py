"""``bge-triton`` as a child process on free loopback ports, ready once it says so: for the GPU check,
the benchmark's tools and the tests, which run the launcher exactly as deployments do."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from bge_deploy.serving.process import ManagedProcess, free_port

READY_LINE = "ready - HTTP"
"""What ``bge-triton`` logs once tritonserver and every model are ready."""


def bge_triton_command(repository: Path, ports: tuple[int, int, int], *flags: str) -> list[str]:
    """``bge-triton`` (this interpreter's) serving ``repository`` on loopback (HTTP, gRPC, metrics ports)."""
    http, grpc, metrics = ports
    return [
        sys.executable, "-m", "bge_deploy.serving.launcher",
        "--model-repository", str(repository),
        "--host", "127.0.0.1",
        "--http-port", str(http),
        "--grpc-port", str(grpc),
        "--metrics-port", str(metrics),
        *flags,
    ]  # fmt: skip


class LaunchedTriton(ManagedProcess):
    """A ``bge-triton`` child serving ``repository``, its output captured line by line (and in ``log_path``)."""

    def __init__(
        self,
        repository: Path,
        *flags: str,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        command = bge_triton_command(repository, ports, *flags)
        super().__init__("bge-triton", command, env=env, log_path=log_path, capture=True, echo=echo)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def wait_ready(self, timeout_s: float) -> str:
        """Until bge-triton logs its ready line (every model ready); that line."""
        return self.wait_line(READY_LINE, timeout_s)
