"""A running ``tritonserver``: its command line, its Python-backend stubs, readiness, and a clean stop."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from types import TracebackType

from bge_deploy.serving.admin_key import ADMIN_KEY_ENV, AdminRestriction, restriction
from bge_deploy.serving.install import LauncherError, TritonInstall, find_triton
from bge_deploy.serving.process import (
    ManagedProcess,
    ProcessError,
    exit_description,
    get_json,
    proc_cmdline,
    proc_stat,
)
from bge_model_repository.contract import TRITON_GRPC_PORT, TRITON_HTTP_PORT, TRITON_METRICS_PORT

log = logging.getLogger("bge-triton")

STUB_BINARY = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")


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


@dataclass(frozen=True)
class StubProcess:
    """A Python-backend stub: the process that runs one model instance's ``model.py`` for tritonserver.

    Triton 2.51 neither restarts a stub that dies nor marks its model not ready; requests to it just
    fail ("Stub process ... is not healthy"), so the launcher watches the stubs itself.
    """

    pid: int
    model: str
    shm_region: str  # /dev/shm file shared with tritonserver; left behind if the server is killed

    @classmethod
    def children_of(cls, parent: int) -> list[StubProcess]:
        stubs = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            stat = proc_stat(int(entry.name))
            if stat is None or int(stat[1]) != parent:
                continue
            argv = proc_cmdline(int(entry.name))
            # argv: stub, <repository>/<model>/<version>/model.py, <shm region>, ...
            if len(argv) >= 3 and Path(argv[0]).name == STUB_BINARY:
                stubs.append(cls(int(entry.name), Path(argv[1]).parent.parent.name, argv[2]))
        return sorted(stubs, key=lambda stub: stub.model)

    def death(self) -> str | None:
        """How the stub ended ("killed by SIGKILL", "exited with code 1"), or None while it runs.

        A dead stub stays a zombie until Triton reaps it; its exit status is still in /proc/<pid>/stat.
        """
        stat = proc_stat(self.pid)
        if stat is None:
            return "exited"
        if stat[0] not in ("Z", "X"):
            return None if self.is_running() else "exited"
        return exit_description(stat)

    def is_running(self) -> bool:
        """Still this stub (not a recycled pid) and not a zombie."""
        stat = proc_stat(self.pid)
        argv = proc_cmdline(self.pid)
        return stat is not None and stat[0] not in ("Z", "X") and bool(argv) and Path(argv[0]).name == STUB_BINARY

    def clean_up(self) -> None:
        """After tritonserver is gone: end the stub if it outlived it and remove its shared memory."""
        if self.is_running():
            os.kill(self.pid, signal.SIGKILL)
        (SHM_DIR / self.shm_region).unlink(missing_ok=True)


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
        # quiet: the log file, appended across restarts; else Triton's own log goes to our stdout
        log_path = self.log_path if self.quiet else None
        command = self.options.command(install.binary, backend_dir, restriction)
        nice = self.options.nice
        self._child = ManagedProcess("tritonserver", command, env=env, log_path=log_path, nice=nice).start()
        return self

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _exited_error(self) -> LauncherError:
        code = None if self.process is None else self.process.returncode
        failures = load_failures(self.log_path.read_text(errors="replace")) if self.log_path.exists() else []
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
