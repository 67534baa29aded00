"""``bge-serve``: export (if needed) + tritonserver + OpenAI gateway, as one command.

Each part is its own process: the export runs torch and exits, so the serving processes never carry
it; Triton and the gateway stop in the order that loses no request (gateway first, so it stops taking
work while Triton still answers what is in flight). While serving, the launcher's watchdog restarts
Triton if a Python backend stub dies or it stops being ready. Every flag is also a ``BGE_SERVE_<FLAG>``
variable; the gateway's own settings (``BGE_GATEWAY_*``, its API key among them) pass through.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from bge_deploy.serving.gateway import GatewayProcess
from bge_deploy.serving.install import LauncherError
from bge_deploy.serving.process import ManagedProcess, ProcessError
from bge_deploy.serving.triton import COLOCATED_NICE, ServerOptions, TritonServer
from bge_deploy.serving.watchdog import Watchdog, WatchdogOptions
from bge_export.settings import Precision
from bge_model_repository.contract import (
    DEFAULT_REPOSITORY,
    DEFAULT_SOURCE,
    GATEWAY_PORT,
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
    TRITON_METRICS_PORT,
    served_name,
)
from bge_model_repository.cpu import Int8Target
from bge_model_repository.encoder_runtime import CpuEngine
from bge_model_repository.logs import configure_logging

log = logging.getLogger("bge-serve")


class ServeSettings(BaseSettings):
    """bge-serve: serve a sentence-embedding model with Triton behind an OpenAI-compatible API."""

    model_config = SettingsConfigDict(
        env_prefix="BGE_SERVE_",
        cli_kebab_case=True,
        cli_prog_name="bge-serve",
        cli_implicit_flags=True,
        protected_namespaces=(),
        extra="ignore",
    )

    model: str = Field(DEFAULT_SOURCE, description="Hugging Face model id or local model directory")
    name: str | None = Field(None, description="served model name (default: last part of --model)")
    repository: Path = Field(DEFAULT_REPOSITORY, description="Triton model repository")
    precision: Precision = Field(Precision.FP32, description="export precision (when exporting)")
    cpu_engine: CpuEngine | None = Field(
        None, description="export's CPU engine (default: onnxruntime; openvino: fp32 only, faster, twice the memory)"
    )
    int8_target: Int8Target | None = Field(None, description="export's int8 target CPU (default: this machine's)")
    reexport: bool = Field(False, description="export again even if the repository already has the model")
    triton: bool = Field(True, description="start tritonserver (--no-triton: use --triton-grpc-url)")
    gateway: bool = Field(True, description="start the OpenAI-compatible gateway")
    host: str = Field("0.0.0.0", description="interface the gateway binds")
    triton_host: str = Field(
        "127.0.0.1",
        description="interface Triton's HTTP and gRPC ports bind: loopback, since they have no authentication "
        "(0.0.0.0 exposes Triton's own inference API to the network)",
    )
    triton_nice: int = Field(
        COLOCATED_NICE,
        ge=0,
        le=19,
        description="CPU priority of Triton's processes (higher yields more): the gateway on the same cores answers "
        "429s and health checks before batch compute (0: equal priority)",
    )
    port: int = Field(GATEWAY_PORT, description="gateway port (OpenAI API under /v1)")
    triton_http_port: int = Field(TRITON_HTTP_PORT)
    triton_grpc_port: int = Field(TRITON_GRPC_PORT)
    triton_metrics_port: int = Field(TRITON_METRICS_PORT)
    triton_grpc_url: str | None = Field(None, description="an existing Triton's gRPC host:port (with --no-triton)")
    ready_timeout_s: float = Field(900.0, description="seconds to wait for models and gateway to be ready")
    watchdog: bool = Field(True, description="restart Triton when a Python backend stub dies or it stays not ready")

    def served_name(self) -> str:
        return served_name(self.model, self.name)

    @classmethod
    def from_cli(cls, argv: Sequence[str] | None = None) -> ServeSettings:
        return CliApp.run(cls, cli_args=list(sys.argv[1:] if argv is None else argv))

    def export_command(self) -> list[str]:
        """The export's command line: its flags, not variables that would leak into anything else."""
        command = [sys.executable, "-m", "bge_export", "--model", self.model, "--output", str(self.repository)]
        command += ["--name", self.served_name(), "--precision", self.precision.value]
        if self.cpu_engine is not None:
            command += ["--cpu-engine", self.cpu_engine.value]
        if self.int8_target is not None:
            command += ["--int8-target", self.int8_target.value]
        return command

    def server_options(self) -> ServerOptions:
        return ServerOptions(
            model_repository=self.repository.resolve(),
            host=self.triton_host,
            http_port=self.triton_http_port,
            grpc_port=self.triton_grpc_port,
            metrics_port=self.triton_metrics_port,
            nice=self.triton_nice,
        )


def export_if_needed(settings: ServeSettings) -> None:
    name = settings.served_name()
    if (settings.repository / name / "config.pbtxt").is_file() and not settings.reexport:
        log.info("model repository %s already has '%s' (--reexport to rebuild)", settings.repository, name)
        return
    log.info("exporting %s -> %s (%s)", settings.model, settings.repository, settings.precision.value)
    code = subprocess.call(settings.export_command())
    if code != 0:
        raise LauncherError(f"export failed (exit code {code})")


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    settings = ServeSettings.from_cli(argv)
    triton: TritonServer | None = None
    gateway: GatewayProcess | None = None
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        log.info("%s received: stopping the gateway, then Triton", signal.Signals(signum).name)
        if gateway is not None:
            gateway.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        grpc_url = settings.triton_grpc_url or f"127.0.0.1:{settings.triton_grpc_port}"
        if settings.triton:
            export_if_needed(settings)
            options = settings.server_options()
            triton = TritonServer(options).start()
            log.info("starting tritonserver (log: %s)", triton.log_path)
            if options.nice:
                log.info(
                    "Triton's processes run at nice %d: the gateway on the same cores answers first (--triton-nice)",
                    options.nice,
                )
            triton.wait_ready(settings.ready_timeout_s, report=True)
            log.info(
                "Triton ready: HTTP :%d, gRPC :%d, metrics :%d/metrics",
                options.http_port,
                options.grpc_port,
                options.metrics_port,
            )
        if settings.gateway:
            fields = {"triton_url": grpc_url, "model_name": settings.served_name()}
            gateway = GatewayProcess(fields, host=settings.host, port=settings.port).start()
            gateway.wait_healthy(settings.ready_timeout_s)
            log.info(
                "ready: OpenAI-compatible API at http://%s:%d/v1 (model '%s')",
                settings.host,
                settings.port,
                settings.served_name(),
            )
        watched: list[ManagedProcess] = [gateway] if gateway is not None else []
        if triton is not None and settings.watchdog:
            code = Watchdog(triton, WatchdogOptions(), settings.ready_timeout_s, lambda: stopping).supervise(watched)
            return 0 if stopping or code is None else code
        while not stopping:
            for process in watched:
                if process.poll() is not None:
                    log.error("%s exited unexpectedly (code %s); stopping", process.name, process.poll())
                    return 1
            if triton is not None and triton.process is not None and triton.process.poll() is not None:
                log.error("tritonserver exited unexpectedly (code %s); stopping", triton.process.returncode)
                return 1
            time.sleep(WatchdogOptions.poll_s)
        return 0
    except (LauncherError, ProcessError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        if gateway is not None:
            gateway.stop(30)
        if triton is not None:
            log.info("tritonserver stopped (exit code %s)", triton.stop())
            triton.remove_workdir()


if __name__ == "__main__":
    sys.exit(main())
