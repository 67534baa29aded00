"""`--self-contained`: export a model, serve it with the pip-installed tritonserver and the gateway, tidy up.

Everything lives in one temporary folder and listens on free loopback ports. The gateway runs as its
own process (`python -m bge_client.gateway`, configured by `BGE_GATEWAY_*` variables, as deployed); if
it cannot be imported or does not become healthy, the stack serves Triton only and says why.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bge_deploy.serving.gateway import GATEWAY_MODULE, GatewayProcess
from bge_deploy.serving.process import ProcessError, free_port
from bge_deploy.serving.triton import ServerOptions, TritonServer

log = logging.getLogger("bge-bench")


@dataclass(frozen=True)
class StackSettings:
    """What to export and how to serve it."""

    model_dir: Path
    name: str
    precision: str = "fp32"
    max_batch_size: int = 64
    threads: int = 1
    parity: bool = True
    gateway: bool = True
    ready_timeout_s: float = 600.0
    keep: bool = False


@dataclass
class LocalStack:
    """A context manager: exported repository + tritonserver (+ gateway) on loopback, all stopped on exit."""

    settings: StackSettings
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bge-bench-")))
    notes: list[str] = field(default_factory=list)
    triton: TritonServer | None = None
    gateway_process: GatewayProcess | None = None
    gateway_url: str | None = None
    metrics_port: int = 0

    @property
    def grpc_url(self) -> str:
        assert self.triton is not None
        return self.triton.grpc_url

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def gateway_log(self) -> Path:
        return self.root / "gateway.log"

    def export(self) -> Path:
        from bge_export.pipeline import run_export
        from bge_export.settings import ExportSettings, Precision

        repository = self.root / "model_repository"
        settings = ExportSettings(
            model=str(self.settings.model_dir),
            output=repository,
            workdir=self.root / "export",
            name=self.settings.name,
            precision=Precision(self.settings.precision),
            max_batch_size=self.settings.max_batch_size,
            intra_op_threads=self.settings.threads,
            parity=self.settings.parity,
        )
        run_export(settings)
        return repository

    def start_triton(self, repository: Path) -> None:
        self.metrics_port = free_port()
        options = ServerOptions(
            model_repository=repository,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=self.metrics_port,
            host="127.0.0.1",
            exit_timeout_s=10,
        )
        self.triton = TritonServer(options, workdir=self.root / "triton").start()
        self.triton.wait_ready(timeout_s=self.settings.ready_timeout_s)

    def start_gateway(self, timeout_s: float = 60.0) -> None:
        if importlib.util.find_spec(GATEWAY_MODULE) is None:
            self.notes.append(f"gateway not benchmarked: {GATEWAY_MODULE} is not importable here")
            return
        fields = {"triton_url": self.grpc_url, "model_name": self.settings.name, "log_level": "warning"}
        self.gateway_process = GatewayProcess(fields, log_path=self.gateway_log).start()
        try:
            self.gateway_process.wait_healthy(timeout_s)
        except ProcessError:
            tail = self.gateway_process.log().strip().splitlines()[-5:]
            self.notes.append(
                "gateway not benchmarked: `python -m bge_client.gateway` did not become healthy"
                + (f" ({' | '.join(tail)})" if tail else "")
            )
            self.stop_gateway()
            return
        self.gateway_url = self.gateway_process.url

    def stop_gateway(self) -> None:
        process, self.gateway_process = self.gateway_process, None
        if process is not None:
            process.stop(15)

    def __enter__(self) -> LocalStack:
        try:
            log.info("exporting %s (%s) into %s", self.settings.model_dir, self.settings.precision, self.root)
            repository = self.export()
            log.info("starting tritonserver")
            self.start_triton(repository)
            if self.settings.gateway:
                self.start_gateway()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self.stop_gateway()
        if self.triton is not None:
            self.triton.stop()
            self.triton = None
        if not self.settings.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
