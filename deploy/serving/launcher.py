"""``bge-triton``: run a real ``tritonserver`` on a model repository, the way every deployment here does.

Which tritonserver (`install.find_triton`): ``--home`` / ``BGE_TRITON_HOME``, else ``/opt/tritonserver``
when it holds ``bin/tritonserver`` (NVIDIA's image), else the nvidia-pytriton wheel. It starts the
server, waits until every model is ready and reports it in plain words, re-checks native GPU encoders'
stored references (`self_check`), forwards SIGTERM/SIGINT so in-flight requests finish, and restarts
the server when it can no longer serve (`watchdog`). Every flag is also a ``BGE_TRITON_<FLAG>``
variable; tritonserver flags of its own go after ``--``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, CliApp, CliUnknownArgs, SettingsConfigDict

from bge_deploy.serving.admin_key import ADMIN_KEY_ENV, RESTRICTED_APIS
from bge_deploy.serving.install import SYSTEM_TRITON_HOME, TRITON_HOME_ENV, LauncherError
from bge_deploy.serving.self_check import check_native_encoders
from bge_deploy.serving.triton import ServerOptions, TritonServer, repository_models
from bge_deploy.serving.watchdog import Watchdog, WatchdogOptions
from bge_model_repository.contract import (
    DEFAULT_REPOSITORY,
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
    TRITON_METRICS_PORT,
)
from bge_model_repository.logs import configure_logging

log = logging.getLogger("bge-triton")
_WATCHDOG = WatchdogOptions()


class TritonSettings(BaseSettings):
    """bge-triton: serve a model repository with tritonserver (a system install, NVIDIA's image, or the wheel's)."""

    model_config = SettingsConfigDict(
        env_prefix="BGE_TRITON_",
        cli_kebab_case=True,
        cli_prog_name="bge-triton",
        cli_implicit_flags=True,
        cli_ignore_unknown_args=True,
        extra="ignore",
    )

    model_repository: Path = Field(DEFAULT_REPOSITORY, description="the Triton model repository to serve")
    host: str = Field("0.0.0.0", description="interface Triton's HTTP and gRPC ports bind")
    http_port: int = Field(TRITON_HTTP_PORT)
    grpc_port: int = Field(TRITON_GRPC_PORT)
    metrics_port: int = Field(TRITON_METRICS_PORT)
    exit_timeout: int = Field(30, description="seconds Triton drains in-flight work on stop")
    ready_timeout: float = Field(600.0, description="seconds to wait for all models")
    restrict_admin_apis: bool = Field(
        True,
        description="keep model-control, shared-memory, trace, logging and statistics behind the admin key "
        "(BGE_TRITON_ADMIN_KEY; --no-restrict-admin-apis exposes them)",
    )
    admin_key_file: Path | None = Field(
        None,
        description="a file holding the admin key (a mounted Secret); else BGE_TRITON_ADMIN_KEY; else a random "
        "key nobody holds. Never on a command line: tritonserver gets it through the argv_secret helper",
    )
    nice: int = Field(
        0,
        ge=0,
        le=19,
        description="run tritonserver, its threads and Python stubs at this lower CPU priority: beside a gateway "
        "on the same cores, 10 lets the gateway refuse and answer health checks first (bge-serve does)",
    )
    verbose: bool = Field(False, description="stream Triton's own log instead of a file")
    home: Path | None = Field(
        None,
        description=f"a system Triton install (bin/tritonserver, backends/); default: ${TRITON_HOME_ENV}, "
        f"else {SYSTEM_TRITON_HOME} if present, else the nvidia-pytriton wheel",
    )
    watchdog: bool = Field(
        True, description="restart tritonserver when a Python backend stub dies, it exits, or it stays not ready"
    )
    watchdog_not_ready_s: float = Field(
        _WATCHDOG.not_ready_s, description="restart a server that was ready and then stays not ready this long"
    )
    watchdog_grace_s: float = Field(_WATCHDOG.grace_s, description="on a restart, seconds before SIGKILL")
    watchdog_dead_stub_grace_s: float = Field(
        _WATCHDOG.dead_stub_grace_s,
        description="the same when a Python backend stub died (the requests it held can never be answered)",
    )
    watchdog_max_restarts: int = Field(
        _WATCHDOG.max_restarts,
        description=f"restarts allowed per {_WATCHDOG.window_s / 60:g} min before the launcher exits 1",
    )
    tritonserver_args: CliUnknownArgs  # tritonserver flags of its own, after "--"

    @classmethod
    def from_cli(cls, argv: Sequence[str] | None = None) -> TritonSettings:
        return CliApp.run(cls, cli_args=list(sys.argv[1:] if argv is None else argv))

    def server_options(self) -> ServerOptions:
        """The one mapping of these settings onto tritonserver's options (tests check manifests through it)."""
        return ServerOptions(
            model_repository=self.model_repository,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            host=self.host,
            exit_timeout_s=self.exit_timeout,
            nice=self.nice,
            restrict_admin_apis=self.restrict_admin_apis,
            admin_key=self.admin_key(),
            triton_home=self.home,
            extra_args=[arg for arg in self.tritonserver_args if arg != "--"],
        )

    def admin_key(self) -> str | None:
        """The key in `admin_key_file`, or None (then the environment's, else a random one)."""
        if self.admin_key_file is None:
            return None
        try:
            key = self.admin_key_file.read_text().strip()
        except OSError as exc:
            raise LauncherError(f"cannot read the admin key file {self.admin_key_file}: {exc.strerror}") from None
        if not key:
            raise LauncherError(f"the admin key file {self.admin_key_file} is empty")
        return key

    def watchdog_options(self) -> WatchdogOptions:
        return WatchdogOptions(
            not_ready_s=self.watchdog_not_ready_s,
            grace_s=self.watchdog_grace_s,
            dead_stub_grace_s=self.watchdog_dead_stub_grace_s,
            max_restarts=self.watchdog_max_restarts,
        )


def serve(settings: TritonSettings, server: TritonServer, stopping: list[bool]) -> int:
    """Start, wait for every model, check native encoders, then supervise until stopped; the exit code."""
    repository = settings.model_repository
    log.info("starting tritonserver on %s (models: %s)", repository, ", ".join(repository_models(repository)))
    if settings.nice:
        log.info("tritonserver and its Python stubs run at nice %d (--nice)", settings.nice)
    if not settings.verbose:
        log.info("Triton's own log goes to %s", server.log_path)
    server.start()
    try:
        server.wait_ready(settings.ready_timeout, report=True, abort=lambda: stopping[0])
    except LauncherError as exc:
        if not stopping[0]:
            log.error("%s", exc)
        server.stop()
        return 1
    for result in check_native_encoders(server.http_url, repository, repository_models(repository)):
        log.info("%s", result.line())
        if not result.passed:
            server.stop()
            return 1
    log.info(
        "ready - HTTP %s:%d, gRPC %s:%d, metrics %s:%d/metrics",
        settings.host,
        settings.http_port,
        settings.host,
        settings.grpc_port,
        settings.host,
        settings.metrics_port,
    )
    if settings.watchdog:
        options = settings.watchdog_options()
        log.info(
            "watchdog on: restarts tritonserver if a Python backend stub dies, it exits, or it stays not ready for "
            "%gs (at most %d restarts per %g min)",
            options.not_ready_s,
            options.max_restarts,
            options.window_s / 60,
        )
        gave_up = Watchdog(server, options, settings.ready_timeout, lambda: stopping[0]).supervise()
        if gave_up is not None:
            server.stop()
            return gave_up
    if stopping[0]:  # again, in case the signal came while a restart was starting a new process
        server.terminate()
    code = server.wait_exit()
    log.info("tritonserver stopped (exit code %d)", code)
    return 0 if stopping[0] and code in (0, -signal.SIGTERM) else code


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    settings = TritonSettings.from_cli(argv)
    repository = settings.model_repository.resolve()
    if not repository.is_dir() or not repository_models(repository):
        log.error("no model repository at %s (run bge-export first)", repository)
        return 2
    settings = settings.model_copy(update={"model_repository": repository})
    try:
        options = settings.server_options()
        restriction = options.admin_restriction()  # a key only the command line could carry is refused here
        if restriction is not None:
            source = (
                f"the key in {settings.admin_key_file}"
                if settings.admin_key_file
                else f"the key in ${ADMIN_KEY_ENV}"
                if os.environ.get(ADMIN_KEY_ENV)
                else "a random key nobody holds"
            )
            log.info("admin APIs (%s) need %s", ", ".join(RESTRICTED_APIS), source)
        server = TritonServer(options, quiet=not settings.verbose)
        log.info("using tritonserver %s", server.install.describe())
    except LauncherError as exc:
        log.error("%s", exc)
        return 2
    stopping = [False]

    def on_signal(signum: int, _frame: object) -> None:
        stopping[0] = True
        log.info(
            "%s received, draining in-flight requests (up to %ds)", signal.Signals(signum).name, settings.exit_timeout
        )
        server.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = serve(settings, server, stopping)
    if code == 0:  # a clean drain: the log and backend links have served their purpose
        server.remove_workdir()
    elif server.log_path.exists():
        log.info("Triton's log is kept at %s", server.log_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
