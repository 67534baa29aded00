"""A running ``tritonserver``: its command line, its Python-backend stubs, readiness, and a clean stop."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from types import TracebackType

from bge_deploy.serving.admin_key import ADMIN_KEY_ENV, AdminRestriction, restriction
from bge_deploy.serving.install import LauncherError, TritonInstall, find_triton
from bge_deploy.serving.process import ManagedProcess, ProcessError, get_json
from bge_deploy.serving.stubs import StubProcess
from bge_model_repository.contract import TRITON_GRPC_PORT, TRITON_HTTP_PORT, TRITON_METRICS_PORT

log = logging.getLogger("bge-triton")


DRAINED_LINE = "All models are stopped, unloading models"
"""What tritonserver logs after a SIGTERM once no inference is in flight any more; unloading follows."""
LOG_LINES_KEPT = 2000
"""Lines of tritonserver's output the launcher keeps in memory (its log file, or stdout, has them all)."""

COLOCATED_NICE = 10
"""Triton's nice value when it shares its cores with the gateway (bge-serve's default): the gateway's work per
request is small and latency-bound (429s, /health, readiness), Triton's is batch compute. Under overload on two
cores the gateway then refuses a 10x burst in tens of milliseconds instead of waiting for Triton's threads
(RELIABILITY.md, "Fast 429"); when nothing else wants the cores Triton uses them all the same. Separate
containers (compose, Kubernetes) are separate cgroups with their own CPU weight and need none."""

METRICS_CONFIG = ("summary_latencies=true", "summary_quantiles=0.5:0.05,0.9:0.01,0.99:0.001")


@dataclass
class ServerOptions:
    """Everything the launcher passes to tritonserver; one place, typed."""

    model_repository: Path
    http_port: int = TRITON_HTTP_PORT
    grpc_port: int = TRITON_GRPC_PORT
    metrics_port: int = TRITON_METRICS_PORT
    host: str = "0.0.0.0"
    exit_timeout_s: int = 30
    admin_key: str | None = None
    restrict_admin_apis: bool = True
    log_verbose: int = 0
    nice: int = 0
    """CPU priority of tritonserver, its threads and its Python stubs (0-19, higher yields more): beside a
    gateway on the same cores, a positive value lets the gateway answer (429s, health) before batch compute
    (`COLOCATED_NICE`)."""
    triton_home: Path | None = None
    """A system Triton install to run (see `find_triton`); None: BGE_TRITON_HOME, /opt/tritonserver, the wheel."""
    extra_args: list[str] = field(default_factory=list)

    def admin_restriction(self) -> AdminRestriction | None:
        """The key for this start (`admin_key.restriction`); None when the admin APIs are left open."""
        return restriction(self.admin_key) if self.restrict_admin_apis else None

    def command(self, binary: Path, backend_dir: Path, restriction: AdminRestriction | None = None) -> list[str]:
        """tritonserver's argv; `restriction` as `admin_restriction` made it (one is made when not given)."""
        cmd = [
            str(binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            # latency summaries (p50/p90/p99 of request, queue and compute time per model) beside Triton's
            # cumulative microsecond counters, which give only means
            *(f"--metrics-config={item}" for item in METRICS_CONFIG),
            "--model-control-mode=none",
            "--strict-readiness=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
        ]
        restriction = restriction or self.admin_restriction()
        if restriction is not None:
            value = restriction.flag_value()
            cmd += [f"--http-restricted-api={value}", f"--grpc-restricted-protocol={value}"]
        return cmd + list(self.extra_args)


_LOAD_FAILURE = re.compile(r"""failed to load '(?P<model>[^']+)' version \d+: (?:\w+: )?(?P<reason>.*?)"?$""")


def load_failures(log_text: str) -> list[str]:
    """One line per model Triton could not load, from its log: what an operator needs first.

    Triton prints the reason inside its status table too, cut to the table's width; its
    ``failed to load '<model>' version <n>: <reason>`` line has it whole.
    """
    found: dict[str, str] = {}
    for line in log_text.splitlines():
        match = _LOAD_FAILURE.search(line)
        if match:
            # a Python model's reason ends in its traceback, escaped onto the same line
            found.setdefault(match["model"], match["reason"].split("\\n")[0])
    return [f"model '{model}' failed to load: {reason}" for model, reason in found.items()]


def repository_models(repository: Path) -> list[str]:
    """Model names in a repository: every folder holding a config.pbtxt."""
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def _to_stdout(line: str) -> None:
    """Triton's own log, passed through as it comes (``--verbose``)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class TritonServer:
    """A running tritonserver process; a context manager that always stops it."""

    def __init__(self, options: ServerOptions, workdir: Path | None = None, quiet: bool = True) -> None:
        self.options = options
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="bge-triton-"))
        self.log_path = self.workdir / "tritonserver.log"
        self.quiet = quiet
        self._child: ManagedProcess | None = None
        self.stubs: list[StubProcess] = []
        """The Python-backend stubs of the running server, recorded once it is ready."""
        self._install: TritonInstall | None = None
        self._restriction: AdminRestriction | None = None

    @property
    def install(self) -> TritonInstall:
        """The tritonserver this server runs, found once (`find_triton`); raises LauncherError if none."""
        if self._install is None:
            self._install = find_triton(self.options.triton_home)
        return self._install

    @property
    def process(self) -> Popen[bytes] | None:
        """The current tritonserver process (a new one after each restart)."""
        return None if self._child is None else self._child.popen

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.options.grpc_port}"

    def start(self) -> TritonServer:
        install = self.install
        self.workdir.mkdir(parents=True, exist_ok=True)
        backend_dir = install.backend_directory(self.workdir / "backends")
        env = dict(os.environ)
        libs = [str(path) for path in install.library_dirs()]
        if libs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*libs, env.get("LD_LIBRARY_PATH")]))
        # The backend stub embeds the Python found first on PATH: make it this interpreter's
        # environment, so model.py sees the same site-packages (tokenizers, onnxruntime, us).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # The key reaches tritonserver through the helper (AdminRestriction), never through our own variable,
        # which its Python backend stubs would inherit.
        env.pop(ADMIN_KEY_ENV, None)
        restriction = self.options.admin_restriction()
        if restriction is not None:
            env.update(restriction.environment(env))
            if restriction.helper is None:
                log.warning(
                    "admin APIs closed with a random key that is on tritonserver's command line, readable by users "
                    "of this host: this install has no argv_secret helper (no C compiler when it was installed)"
                )
        self._restriction = restriction
        self.stubs = []
        # quiet: the log file, appended across restarts; else Triton's own log goes to our stdout. Either way the
        # launcher reads it line by line too (when a restart may stop waiting: `stop_drained`).
        log_path = self.log_path if self.quiet else None
        command = self.options.command(install.binary, backend_dir, restriction)
        self._child = ManagedProcess(
            "tritonserver",
            command,
            env=env,
            log_path=log_path,
            capture=True,
            echo=None if self.quiet else _to_stdout,
            nice=self.options.nice,
            keep_lines=LOG_LINES_KEPT,
        ).start()
        return self

    def log_text(self) -> str:
        """Triton's log: the file (every start of this server) when quiet, else the lines kept in memory."""
        if self.quiet:
            return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "" if self._child is None else self._child.log()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _exited_error(self) -> LauncherError:
        code = None if self.process is None else self.process.returncode
        failures = load_failures(self.log_text())
        summary = "".join(f"\n{line}" for line in failures)
        return LauncherError(f"tritonserver exited (code {code}) before it was ready:{summary}\n{self.log_tail()}")

    def wait_ready(
        self,
        timeout_s: float = 120.0,
        models: Sequence[str] | None = None,
        report: bool = False,
        abort: Callable[[], bool] | None = None,
    ) -> None:
        """Block until the server and every model answer ready; raise with the log tail if not.

        ``abort`` is asked on every poll: a launcher told to stop must not sit out a model load.
        """
        if self._child is None:
            raise LauncherError("tritonserver was not started")
        pending = list(models) if models is not None else repository_models(self.options.model_repository)

        def ready() -> bool:
            for name in list(pending):
                status, _ = get_json(f"{self.http_url}/v2/models/{name}/ready")
                if status == 200:
                    pending.remove(name)
                    if report:
                        log.info("model '%s' loaded and ready", name)
            return not pending and self.is_ready(timeout_s=2.0)

        try:
            self._child.wait_until(ready, "every model ready", timeout_s, poll_s=0.25, abort=abort)
        except ProcessError as exc:
            if self._child.poll() is not None:
                raise self._exited_error() from None
            if abort is not None and abort():
                raise LauncherError("stopped while waiting for the models to be ready") from None
            raise LauncherError(
                f"models not ready after {timeout_s:.0f}s: {', '.join(pending) or 'server'}\n{self.log_tail()}"
            ) from exc
        self.stubs = StubProcess.children_of(self._child.pid)
        self.check_admin_key()

    def check_admin_key(self) -> None:
        """Raise LauncherError unless this start's key, and not the helper's placeholder, opens the admin APIs."""
        if self._restriction is not None:
            self._restriction.check(self.http_url, self.log_tail(5))

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        """Server ready, which with --strict-readiness means every model is ready."""
        status, _ = get_json(f"{self.http_url}/v2/health/ready", timeout_s=timeout_s)
        return status == 200

    def terminate(self) -> None:
        """SIGTERM once per process: Triton drains on the first; a second would only repeat it."""
        if self._child is not None:
            self._child.terminate()

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, let Triton drain in-flight requests, then SIGKILL if it overstays.

        After a SIGKILL (or any crash) the stubs may outlive the server and their shared memory stays
        in /dev/shm; both are cleaned up so a restart starts from nothing.
        """
        if self._child is None:
            return None
        code = self._child.stop(timeout_s or self.options.exit_timeout_s + 10)
        for stub in self.stubs:
            stub.clean_up()
        return code

    def stop_drained(self, grace_s: float) -> int | None:
        """For a restart: SIGTERM, then SIGKILL as soon as Triton says no inference is in flight any more (or after
        ``grace_s``). What Triton does next, unloading each model (about a second per Python stub here; a model
        whose stub died never unloads cleanly), would only delay recovery. The stubs are cleaned up."""
        if self._child is None:
            return None
        since = time.monotonic()
        self._child.terminate()
        while self._child.poll() is None and time.monotonic() - since < grace_s:
            if self._child.said_since(DRAINED_LINE, since):
                break
            time.sleep(0.05)
        self._child.kill()
        code = self._child.wait()
        for stub in self.stubs:
            stub.clean_up()
        return code

    def wait_exit(self) -> int:
        """Until tritonserver ends by itself (after a terminate); its code. The stubs are cleaned up."""
        assert self._child is not None
        code = self._child.wait()
        for stub in self.stubs:
            stub.clean_up()
        return code

    def remove_workdir(self) -> bool:
        """Delete the scratch folder (log, backend links) if this server made it; True if it did."""
        if not self._own_workdir or not self.workdir.exists():
            return False
        shutil.rmtree(self.workdir, ignore_errors=True)
        return True

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
