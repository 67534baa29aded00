"""``bge-serve``: export (if needed) + tritonserver + OpenAI gateway, as one command.

Each part is its own process: the export runs torch and exits, so the serving processes
never carry it; Triton and the gateway stop in the order that loses no request (gateway
first, so it stops taking work while Triton still answers what is in flight). While serving,
the launcher's watchdog restarts Triton if a Python backend stub dies or it stops being ready.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from bge_deploy.launcher import LauncherError, ServerOptions, TritonServer, Watchdog, WatchdogOptions
from bge_export.settings import Precision


class ServeSettings(BaseSettings):
    """bge-serve: serve a sentence-embedding model with Triton behind an OpenAI-compatible API."""

    model_config = SettingsConfigDict(
        env_prefix="BGE_",
        cli_kebab_case=True,
        cli_prog_name="bge-serve",
        cli_implicit_flags=True,
        protected_namespaces=(),
        extra="ignore",
    )

    model: str = Field("BAAI/bge-large-zh-v1.5", description="Hugging Face model id or local model directory")
    name: str | None = Field(None, description="served model name (default: last part of --model)")
    repository: Path = Field(Path("build/model_repository"), description="Triton model repository")
    precision: Precision = Field(Precision.FP32, description="export precision when exporting")
    reexport: bool = Field(False, description="export again even if the repository already has the model")
    triton: bool = Field(True, description="start tritonserver (--no-triton: use --triton-grpc-url)")
    gateway: bool = Field(True, description="start the OpenAI-compatible gateway")
    host: str = Field("0.0.0.0", description="interface for the gateway and Triton")
    port: int = Field(30000, description="gateway port (OpenAI API under /v1)")
    triton_http_port: int = Field(8000)
    triton_grpc_port: int = Field(8001)
    triton_metrics_port: int = Field(8002)
    triton_grpc_url: str | None = Field(None, description="an existing Triton's gRPC host:port (with --no-triton)")
    api_key: SecretStr | None = Field(None, description="bearer token the gateway requires (none: open)")
    ready_timeout_s: float = Field(900.0, description="seconds to wait for models and gateway to be ready")
    watchdog: bool = Field(True, description="restart Triton when a Python backend stub dies or it stays not ready")

    def served_name(self) -> str:
        return self.name or Path(self.model.rstrip("/")).name


def say(message: str) -> None:
    print(f"bge-serve: {message}", flush=True)


def export_if_needed(settings: ServeSettings) -> None:
    name = settings.served_name()
    if (settings.repository / name / "config.pbtxt").is_file() and not settings.reexport:
        say(f"model repository {settings.repository} already has '{name}' (--reexport to rebuild)")
        return
    say(f"exporting {settings.model} -> {settings.repository} ({settings.precision.value})")
    cmd = [
        sys.executable,
        "-m",
        "bge_export",
        "--model",
        settings.model,
        "--output",
        str(settings.repository),
        "--name",
        name,
        "--precision",
        settings.precision.value,
    ]
    code = subprocess.call(cmd)
    if code != 0:
        raise SystemExit(f"bge-serve: export failed (exit code {code})")


def wait_http_ok(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LauncherError(f"the gateway exited (code {process.returncode}) before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise LauncherError(f"the gateway was not healthy after {timeout_s:.0f}s ({url})")


def start_gateway(settings: ServeSettings, triton_grpc_url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "BGE_GATEWAY_TRITON_URL": triton_grpc_url,
            "BGE_GATEWAY_MODEL_NAME": settings.served_name(),
            "BGE_GATEWAY_HOST": settings.host,
            "BGE_GATEWAY_PORT": str(settings.port),
        }
    )
    if settings.api_key is not None:
        env["BGE_GATEWAY_API_KEY"] = settings.api_key.get_secret_value()
    return subprocess.Popen([sys.executable, "-m", "bge_client.gateway"], env=env)


def main(argv: Sequence[str] | None = None) -> int:
    settings = CliApp.run(ServeSettings, cli_args=list(sys.argv[1:] if argv is None else argv))
    triton: TritonServer | None = None
    gateway: subprocess.Popen[bytes] | None = None
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        say(f"{signal.Signals(signum).name} received: stopping the gateway, then Triton")
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        grpc_url = settings.triton_grpc_url or f"127.0.0.1:{settings.triton_grpc_port}"
        if settings.triton:
            export_if_needed(settings)
            options = ServerOptions(
                model_repository=settings.repository.resolve(),
                host=settings.host,
                http_port=settings.triton_http_port,
                grpc_port=settings.triton_grpc_port,
                metrics_port=settings.triton_metrics_port,
            )
            triton = TritonServer(options).start()
            say(f"starting tritonserver (log: {triton.log_path})")
            triton.wait_ready(settings.ready_timeout_s, report=True)
            say(
                f"Triton ready: HTTP :{options.http_port}, gRPC :{options.grpc_port}, "
                f"metrics :{options.metrics_port}/metrics"
            )
        if settings.gateway:
            gateway = start_gateway(settings, grpc_url)
            wait_http_ok(f"http://127.0.0.1:{settings.port}/health", gateway, settings.ready_timeout_s)
            say(
                f"ready: OpenAI-compatible API at http://{settings.host}:{settings.port}/v1 "
                f"(model '{settings.served_name()}')"
            )
        watchdog = None
        if triton is not None and settings.watchdog:
            watchdog = Watchdog(triton, WatchdogOptions(), settings.ready_timeout_s, lambda: stopping, say)
        while not stopping:
            for label, proc in (("gateway", gateway), ("tritonserver", triton and triton.process)):
                if watchdog is not None and label == "tritonserver":
                    problem = watchdog.problem()
                    if problem is not None and not stopping and not watchdog.restart(problem):
                        return 0 if stopping else 1
                elif proc is not None and proc.poll() is not None:
                    say(f"{label} exited unexpectedly (code {proc.returncode}); stopping")
                    return 1
            time.sleep(WatchdogOptions.poll_s)
        return 0
    except LauncherError as exc:
        say(str(exc))
        return 1
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(timeout=30)
            except subprocess.TimeoutExpired:
                gateway.kill()
        if triton is not None:
            code = triton.stop()
            say(f"tritonserver stopped (exit code {code})")


if __name__ == "__main__":
    sys.exit(main())
