"""Run a real ``tritonserver``: a system install (NVIDIA's container) or the ``nvidia-pytriton`` wheel.

Which one (`find_triton`): ``--triton-home`` / ``BGE_TRITON_HOME``, else ``/opt/tritonserver`` when
it holds ``bin/tritonserver`` (NVIDIA's image), else the wheel. A system install is used as it is,
backends and all. The wheel carries the server binary, the Python backend and one backend stub per
Python version, but not in the layout Triton expects: the stub must sit beside
``libtriton_python.so`` and the bundled shared libraries must be on ``LD_LIBRARY_PATH``; the
launcher assembles that layout once. Either way it starts the server, waits until every model is
ready, reports it in plain words, forwards SIGTERM/SIGINT so in-flight requests finish, and
restarts the server when it can no longer serve (`Watchdog`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bge_deploy.served_check import check_native_encoders

# Admin APIs that a serving deployment must not expose to clients (issue: access control).
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging", "statistics")
ADMIN_HEADER = "triton-admin-key"
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
"""Triton prefixes the configured header on gRPC: an admin gRPC call sends this metadata key."""
ADMIN_KEY_ENV = "BGE_TRITON_ADMIN_KEY"
"""Environment variable holding the admin key (from a Secret in Kubernetes); a random key when unset."""

STUB_BINARY = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")
TRITON_HOME_ENV = "BGE_TRITON_HOME"
"""Environment variable naming a system Triton install (a folder with bin/tritonserver and backends/)."""
SYSTEM_TRITON_HOME = Path("/opt/tritonserver")
"""Where NVIDIA's tritonserver images install Triton; used when present and nothing else is named."""


class LauncherError(RuntimeError):
    """A problem the operator can act on (missing wheel, server died, not ready in time)."""


@dataclass(frozen=True)
class TritonDistribution:
    """Where the pip-installed Triton (the ``nvidia-pytriton`` wheel) keeps its pieces."""

    binary: Path
    backend_lib: Path
    backend_utils: Path
    stub: Path
    libs: Path

    @classmethod
    def find(cls) -> TritonDistribution:
        try:
            import pytriton
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise LauncherError(
                "tritonserver comes from the 'nvidia-pytriton' wheel: pip install 'bge-triton[serve]'"
            ) from exc
        root = Path(pytriton.__file__).resolve().parent / "tritonserver"
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        dist = cls(
            binary=root / "bin" / "tritonserver",
            backend_lib=root / "backends" / "python" / "libtriton_python.so",
            backend_utils=root / "backends" / "python" / "triton_python_backend_utils.py",
            stub=root / "python_backend_stubs" / py / "triton_python_backend_stub",
            libs=root.parent.parent / "nvidia_pytriton.libs",
        )
        for path in (dist.binary, dist.backend_lib, dist.backend_utils, dist.stub):
            if not path.exists():
                raise LauncherError(f"the nvidia-pytriton install lacks {path} (Python {py} stub?)")
        return dist

    def backend_directory(self, where: Path) -> Path:
        """Lay out ``<where>/python/{libtriton_python.so, utils, stub}`` as Triton expects."""
        python_dir = where / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for source in (self.backend_lib, self.backend_utils, self.stub):
            link = python_dir / source.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source)
        return where

    def library_dirs(self) -> list[Path]:
        """The wheel's bundled shared libraries, for LD_LIBRARY_PATH: the symlinked ``libtriton_python.so``
        cannot reach them through its own ``$ORIGIN``-relative RPATH."""
        return [self.libs]

    def describe(self) -> str:
        return f"{self.binary} (nvidia-pytriton wheel)"


@dataclass(frozen=True)
class SystemTriton:
    """A Triton installed the way NVIDIA's images lay it out: ``<home>/bin/tritonserver``, ``<home>/backends/``.

    Used as it is: its own backends folder (python, onnxruntime, tensorrt, ...) and the library path
    its environment already has (NVIDIA's image sets ``LD_LIBRARY_PATH`` itself).
    """

    home: Path
    source: str
    """Why this install was chosen, for the start-up line ("BGE_TRITON_HOME", "--triton-home", ...)."""

    @property
    def binary(self) -> Path:
        return self.home / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.home / "backends"

    @classmethod
    def at(cls, home: Path, source: str) -> SystemTriton:
        install = cls(home.absolute(), source)
        for path in (install.binary, install.backends):
            if not path.exists():
                raise LauncherError(f"no Triton install at {install.home} ({source}): {path} is missing")
        return install

    def backend_directory(self, where: Path) -> Path:
        """The install's own backends folder; nothing is assembled in ``where``."""
        return self.backends

    def library_dirs(self) -> list[Path]:
        return []

    def describe(self) -> str:
        return f"{self.binary} (system install, {self.source})"


TritonInstall = TritonDistribution | SystemTriton


def find_triton(
    home: Path | None = None,
    environ: Mapping[str, str] = os.environ,
    system_home: Path = SYSTEM_TRITON_HOME,
) -> TritonInstall:
    """The tritonserver to run, first match wins.

    1. ``home`` (the ``--triton-home`` flag), else the ``BGE_TRITON_HOME`` environment variable: a
       system install that must exist (a wrong path is an error, not a silent fallback);
    2. ``/opt/tritonserver`` if it holds ``bin/tritonserver`` (NVIDIA's tritonserver images);
    3. the ``nvidia-pytriton`` wheel.
    """
    if home is not None:
        return SystemTriton.at(home, "--triton-home")
    if environ.get(TRITON_HOME_ENV):
        return SystemTriton.at(Path(environ[TRITON_HOME_ENV]), TRITON_HOME_ENV)
    if (system_home / "bin" / "tritonserver").exists():
        return SystemTriton.at(system_home, f"found at {system_home}")
    return TritonDistribution.find()


@dataclass
class ServerOptions:
    """Everything the launcher passes to tritonserver; one place, typed."""

    model_repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "0.0.0.0"
    exit_timeout_s: int = 30
    admin_key: str | None = None
    restrict_admin_apis: bool = True
    log_verbose: int = 0
    triton_home: Path | None = None
    """A system Triton install to run (see `find_triton`); None: BGE_TRITON_HOME, /opt/tritonserver, the wheel."""
    extra_args: list[str] = field(default_factory=list)

    def restriction_value(self) -> str:
        key = self.admin_key or os.environ.get(ADMIN_KEY_ENV) or os.urandom(16).hex()
        return f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={key}"

    def command(self, binary: Path, backend_dir: Path) -> list[str]:
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
            "--model-control-mode=none",
            "--strict-readiness=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.restrict_admin_apis:
            value = self.restriction_value()
            cmd += [f"--http-restricted-api={value}", f"--grpc-restricted-protocol={value}"]
        return cmd + list(self.extra_args)


def _get_json(url: str, timeout: float = 2.0) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError):
        return 0, None  # not listening yet, or gone


_LOAD_FAILURE = re.compile(r"""failed to load '(?P<model>[^']+)' version \d+: (?:\w+: )?(?P<reason>.*?)"?$""")


def load_failures(log: str) -> list[str]:
    """One line per model Triton could not load, from its log: what an operator needs first.

    Triton prints the reason inside its status table too, cut to the table's width; its
    ``failed to load '<model>' version <n>: <reason>`` line has it whole.
    """
    found: dict[str, str] = {}
    for line in log.splitlines():
        match = _LOAD_FAILURE.search(line)
        if match:
            # a Python model's reason ends in its traceback, escaped onto the same line
            found.setdefault(match["model"], match["reason"].split("\\n")[0])
    return [f"model '{model}' failed to load: {reason}" for model, reason in found.items()]


def repository_models(repository: Path) -> list[str]:
    """Model names in a repository: every folder holding a config.pbtxt."""
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], ppid [1]); None if gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


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
            stat = _proc_stat(int(entry.name))
            if stat is None or int(stat[1]) != parent:
                continue
            argv = _proc_cmdline(int(entry.name))
            # argv: stub, <repository>/<model>/<version>/model.py, <shm region>, ...
            if len(argv) >= 3 and Path(argv[0]).name == STUB_BINARY:
                stubs.append(cls(int(entry.name), Path(argv[1]).parent.parent.name, argv[2]))
        return sorted(stubs, key=lambda stub: stub.model)

    def death(self) -> str | None:
        """How the stub ended ("killed by SIGKILL", "exited with code 1"), or None while it runs.

        A dead stub stays a zombie until Triton reaps it; its exit status is still in /proc/<pid>/stat.
        """
        stat = _proc_stat(self.pid)
        if stat is None:
            return "exited"
        if stat[0] not in ("Z", "X"):
            return None if self.is_running() else "exited"
        status = int(stat[49]) if len(stat) > 49 else 0  # exit_code, as waitpid(2) reports it
        if status & 0x7F:
            return f"killed by {signal.Signals(status & 0x7F).name}"
        return f"exited with code {status >> 8}"

    def is_running(self) -> bool:
        """Still this stub (not a recycled pid) and not a zombie."""
        stat = _proc_stat(self.pid)
        argv = _proc_cmdline(self.pid)
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
        self.process: subprocess.Popen[bytes] | None = None
        self.stubs: list[StubProcess] = []
        """The Python-backend stubs of the running server, recorded once it is ready."""
        self._terminated: int | None = None
        self._install: TritonInstall | None = None

    @property
    def install(self) -> TritonInstall:
        """The tritonserver this server runs, found once (`find_triton`); raises LauncherError if none."""
        if self._install is None:
            self._install = find_triton(self.options.triton_home)
        return self._install

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
        cmd = self.options.command(install.binary, backend_dir)
        self.stubs = []
        if not self.quiet:
            self.process = subprocess.Popen(cmd, env=env)
            return self
        with self.log_path.open("ab") as log:  # appended: a restarted server keeps the earlier log
            self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

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
        names = list(models) if models is not None else repository_models(self.options.model_repository)
        pending = list(names)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                failures = load_failures(self.log_path.read_text(errors="replace")) if self.log_path.exists() else []
                summary = "".join(f"\n{line}" for line in failures)
                raise LauncherError(
                    f"tritonserver exited (code {code}) before it was ready:{summary}\n{self.log_tail()}"
                )
            if abort is not None and abort():
                raise LauncherError("stopped while waiting for the models to be ready")
            for name in list(pending):
                status, _ = _get_json(f"{self.http_url}/v2/models/{name}/ready")
                if status == 200:
                    pending.remove(name)
                    if report:
                        print(f"bge-triton: model '{name}' loaded and ready", flush=True)
            if not pending:
                status, _ = _get_json(f"{self.http_url}/v2/health/ready")
                if status == 200:
                    self.stubs = StubProcess.children_of(self.process.pid)
                    return
            if time.monotonic() > deadline:
                raise LauncherError(
                    f"models not ready after {timeout_s:.0f}s: {', '.join(pending) or 'server'}\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        """Server ready, which with --strict-readiness means every model is ready."""
        status, _ = _get_json(f"{self.http_url}/v2/health/ready", timeout=timeout_s)
        return status == 200

    def terminate(self) -> None:
        """SIGTERM once per process: Triton drains on the first; a second would only repeat it."""
        if self.process is not None and self.process.poll() is None and self._terminated != self.process.pid:
            self._terminated = self.process.pid
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, let Triton drain in-flight requests, then SIGKILL if it overstays.

        After a SIGKILL (or any crash) the stubs may outlive the server and their shared memory stays
        in /dev/shm; both are cleaned up so a restart starts from nothing.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=timeout_s or self.options.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stub in self.stubs:
            stub.clean_up()
        return self.process.returncode

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


@dataclass(frozen=True)
class WatchdogOptions:
    """When the launcher restarts tritonserver by itself (flags ``--watchdog-*``)."""

    poll_s: float = 0.25
    """How often the stubs and the process are checked (cheap /proc reads)."""
    not_ready_s: float = 15.0
    """A server that was ready and then stays not ready (or does not answer) this long is restarted."""
    grace_s: float = 5.0
    """Before SIGKILL, in-flight work of the healthy models gets this long to finish. Triton cannot
    unload a model whose stub is dead, so waiting for its own exit timeout would only delay recovery."""
    max_restarts: int = 5
    """Restarts allowed within ``window_s``; one more and the launcher exits 1, so the orchestrator
    sees a crash loop instead of a server that flaps forever."""
    window_s: float = 600.0


class Watchdog:
    """Restarts tritonserver when it can no longer serve, saying why in one line.

    Triggers: a Python-backend stub died (Triton itself would keep reporting the model ready while
    every request to it fails), tritonserver exited on its own, or the server stayed not ready for
    ``not_ready_s`` after having been ready. The restart is SIGTERM (Triton closes HTTP at once, so
    readiness probes fail within one poll, and refuses new gRPC work), SIGKILL after ``grace_s``,
    clean-up of the stubs' shared memory, start, and wait until every model is ready again.
    """

    def __init__(
        self,
        server: TritonServer,
        options: WatchdogOptions,
        ready_timeout_s: float,
        stopping: Callable[[], bool],
        say: Callable[[str], None],
    ) -> None:
        self.server = server
        self.options = options
        self.ready_timeout_s = ready_timeout_s
        self.stopping = stopping
        self.say = say
        self.restarts: list[float] = []
        self._not_ready_since: float | None = None
        self._next_ready_check = 0.0

    def problem(self) -> str | None:
        """Why the server cannot serve now, or None. Cheap enough to ask every ``poll_s``."""
        process = self.server.process
        if process is None:
            return "tritonserver is not running"
        if process.poll() is not None:
            return f"tritonserver exited on its own (code {process.returncode})"
        for stub in self.server.stubs:
            death = stub.death()
            if death is not None:
                return f"the Python backend stub of model '{stub.model}' (pid {stub.pid}) {death}"
        now = time.monotonic()
        if now < self._next_ready_check:
            return None
        self._next_ready_check = now + 1.0
        if self.server.is_ready():
            self._not_ready_since = None
            return None
        self._not_ready_since = self._not_ready_since or now
        if now - self._not_ready_since >= self.options.not_ready_s:
            return f"tritonserver has not been ready for {now - self._not_ready_since:.0f}s"
        return None

    def restart(self, problem: str) -> bool:
        """Restart tritonserver; False when the restart budget is spent or the restart failed."""
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < self.options.window_s] + [now]
        budget = f"{self.options.max_restarts} in {self.options.window_s / 60:g} min"
        if len(self.restarts) > self.options.max_restarts:
            self.say(f"watchdog: {problem}; already restarted {budget}, giving up")
            return False
        self.say(f"watchdog: {problem}; restarting tritonserver (restart {len(self.restarts)}, at most {budget})")
        code = self.server.stop(timeout_s=self.options.grace_s)
        self.say(f"watchdog: old tritonserver gone (exit code {code}); starting a new one")
        self._not_ready_since = None
        if self.stopping():
            return False
        self.server.start()
        try:
            self.server.wait_ready(self.ready_timeout_s, abort=self.stopping)
        except LauncherError as exc:
            if not self.stopping():
                self.say(f"watchdog: the restarted tritonserver did not become ready: {exc}")
            return False
        self.say(f"watchdog: tritonserver ready again {time.monotonic() - now:.1f}s after the failure was seen")
        return True

    def supervise(self) -> int | None:
        """Keep the server serving until a stop is asked for; the exit code when the watchdog gives up."""
        while not self.stopping():
            problem = self.problem()
            if problem is not None and not self.stopping() and not self.restart(problem):
                return None if self.stopping() else 1
            time.sleep(self.options.poll_s)
        return None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="bge-triton",
        description="Serve a model repository with tritonserver: a system install (NVIDIA's image) or the wheel's.",
    )
    parser.add_argument(
        "--model-repository", type=Path, default=Path(env("BGE_MODEL_REPOSITORY", "build/model_repository"))
    )
    parser.add_argument("--http-port", type=int, default=int(env("BGE_TRITON_HTTP_PORT", "8000")))
    parser.add_argument("--grpc-port", type=int, default=int(env("BGE_TRITON_GRPC_PORT", "8001")))
    parser.add_argument("--metrics-port", type=int, default=int(env("BGE_TRITON_METRICS_PORT", "8002")))
    parser.add_argument("--host", default=env("BGE_TRITON_HOST", "0.0.0.0"))
    parser.add_argument("--exit-timeout", type=int, default=30, help="seconds Triton drains in-flight work on stop")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for all models")
    parser.add_argument(
        "--no-restrict-admin-apis",
        action="store_true",
        help="expose model-control, shared-memory, trace, logging and statistics APIs",
    )
    parser.add_argument("--verbose", action="store_true", help="stream Triton's own log instead of a file")
    parser.add_argument(
        "--triton-home",
        type=Path,
        default=None,
        help=f"a system Triton install (bin/tritonserver, backends/); default: ${TRITON_HOME_ENV}, "
        f"else {SYSTEM_TRITON_HOME} if present, else the nvidia-pytriton wheel",
    )
    defaults = WatchdogOptions()
    parser.add_argument(
        "--no-watchdog",
        action="store_true",
        help="do not restart tritonserver when a Python backend stub dies, it exits, or it stays not ready",
    )
    parser.add_argument(
        "--watchdog-not-ready-s",
        type=float,
        default=defaults.not_ready_s,
        help="restart a server that was ready and then stays not ready this long",
    )
    parser.add_argument(
        "--watchdog-grace-s",
        type=float,
        default=defaults.grace_s,
        help="on a restart, seconds in-flight requests get before SIGKILL",
    )
    parser.add_argument(
        "--watchdog-max-restarts",
        type=int,
        default=defaults.max_restarts,
        help=f"restarts allowed per {defaults.window_s / 60:g} min before the launcher exits 1",
    )
    parser.add_argument("extra", nargs="*", help="extra tritonserver flags, after '--'")
    return parser.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """The one mapping of bge-triton's flags onto ServerOptions (tests check manifests through it)."""
    return ServerOptions(
        model_repository=args.model_repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        host=args.host,
        exit_timeout_s=args.exit_timeout,
        restrict_admin_apis=not args.no_restrict_admin_apis,
        triton_home=args.triton_home,
        extra_args=args.extra,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    repository = args.model_repository.resolve()
    if not repository.is_dir() or not repository_models(repository):
        print(f"bge-triton: no model repository at {repository} (run bge-export first)", file=sys.stderr)
        return 2
    args.model_repository = repository
    options = options_from_args(args)
    server = TritonServer(options, quiet=not args.verbose)
    stopping = False

    def say(message: str) -> None:
        print(f"bge-triton: {message}", flush=True)

    try:
        say(f"using tritonserver {server.install.describe()}")
    except LauncherError as exc:
        print(f"bge-triton: {exc}", file=sys.stderr, flush=True)
        return 2

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        say(f"{signal.Signals(signum).name} received, draining in-flight requests (up to {options.exit_timeout_s}s)")
        server.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def serve() -> int:
        say(f"starting tritonserver on {repository} (models: {', '.join(repository_models(repository))})")
        if not args.verbose:
            say(f"Triton's own log goes to {server.log_path}")
        server.start()
        try:
            server.wait_ready(args.ready_timeout, report=True, abort=lambda: stopping)
        except LauncherError as exc:
            if not stopping:
                print(f"bge-triton: {exc}", file=sys.stderr, flush=True)
            server.stop()
            return 1
        for result in check_native_encoders(server.http_url, repository, repository_models(repository)):
            say(result.line())
            if not result.passed:
                server.stop()
                return 1
        say(
            f"ready - HTTP {args.host}:{args.http_port}, gRPC {args.host}:{args.grpc_port}, "
            f"metrics {args.host}:{args.metrics_port}/metrics"
        )
        if not args.no_watchdog:
            watchdog_options = WatchdogOptions(
                not_ready_s=args.watchdog_not_ready_s,
                grace_s=args.watchdog_grace_s,
                max_restarts=args.watchdog_max_restarts,
            )
            say(
                f"watchdog on: restarts tritonserver if a Python backend stub dies, it exits, or it stays not "
                f"ready for {watchdog_options.not_ready_s:g}s (at most {watchdog_options.max_restarts} restarts "
                f"per {watchdog_options.window_s / 60:g} min)"
            )
            watchdog = Watchdog(server, watchdog_options, args.ready_timeout, lambda: stopping, say)
            gave_up = watchdog.supervise()
            if gave_up is not None:
                server.stop()
                return gave_up
        if stopping:  # again, in case the signal came while a restart was starting a new process
            server.terminate()
        assert server.process is not None
        code = server.process.wait()
        for stub in server.stubs:
            stub.clean_up()
        say(f"tritonserver stopped (exit code {code})")
        return 0 if stopping and code in (0, -signal.SIGTERM) else code

    code = serve()
    if code == 0:  # a clean drain: the log and backend links have served their purpose
        server.remove_workdir()
    elif server.log_path.exists():
        say(f"Triton's log is kept at {server.log_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
