"""Run the real ``tritonserver`` shipped in the ``nvidia-pytriton`` wheel, without Docker.

The wheel carries the server binary, the Python backend and one backend stub per Python
version, but not in the layout Triton expects: the stub must sit beside
``libtriton_python.so`` and the bundled shared libraries must be on ``LD_LIBRARY_PATH``.
This module assembles that layout once, starts the server, waits until every model is
ready, reports it in plain words, and forwards SIGTERM/SIGINT so in-flight requests finish.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

# Admin APIs that a serving deployment must not expose to clients (issue: access control).
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging", "statistics")
ADMIN_HEADER = "triton-admin-key"


class LauncherError(RuntimeError):
    """A problem the operator can act on (missing wheel, server died, not ready in time)."""


@dataclass(frozen=True)
class TritonDistribution:
    """Where the pip-installed Triton keeps its pieces."""

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
    extra_args: list[str] = field(default_factory=list)

    def restriction_value(self) -> str:
        key = self.admin_key or os.environ.get("BGE_TRITON_ADMIN_KEY") or os.urandom(16).hex()
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


def repository_models(repository: Path) -> list[str]:
    """Model names in a repository: every folder holding a config.pbtxt."""
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


class TritonServer:
    """A running tritonserver process; a context manager that always stops it."""

    def __init__(self, options: ServerOptions, workdir: Path | None = None, quiet: bool = True) -> None:
        self.options = options
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="bge-triton-"))
        self.log_path = self.workdir / "tritonserver.log"
        self.quiet = quiet
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.options.grpc_port}"

    def start(self) -> TritonServer:
        dist = TritonDistribution.find()
        backend_dir = dist.backend_directory(self.workdir / "backends")
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(dist.libs), env.get("LD_LIBRARY_PATH")]))
        # The backend stub embeds the Python found first on PATH: make it this interpreter's
        # environment, so model.py sees the same site-packages (tokenizers, onnxruntime, us).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        cmd = self.options.command(dist.binary, backend_dir)
        log = None if not self.quiet else self.log_path.open("wb")
        self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = 120.0, models: Sequence[str] | None = None, report: bool = False) -> None:
        """Block until the server and every model answer ready; raise with the log tail if not."""
        names = list(models) if models is not None else repository_models(self.options.model_repository)
        pending = list(names)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise LauncherError(f"tritonserver exited (code {code}) before it was ready:\n{self.log_tail()}")
            for name in list(pending):
                status, _ = _get_json(f"{self.http_url}/v2/models/{name}/ready")
                if status == 200:
                    pending.remove(name)
                    if report:
                        print(f"bge-triton: model '{name}' loaded and ready", flush=True)
            if not pending:
                status, _ = _get_json(f"{self.http_url}/v2/health/ready")
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise LauncherError(
                    f"models not ready after {timeout_s:.0f}s: {', '.join(pending) or 'server'}\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, let Triton drain in-flight requests, then SIGKILL if it overstays."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s or self.options.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="bge-triton", description="Serve a model repository with the pip-installed tritonserver."
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
    parser.add_argument("extra", nargs="*", help="extra tritonserver flags, after '--'")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    repository = args.model_repository.resolve()
    if not repository.is_dir() or not repository_models(repository):
        print(f"bge-triton: no model repository at {repository} (run bge-export first)", file=sys.stderr)
        return 2
    options = ServerOptions(
        model_repository=repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        host=args.host,
        exit_timeout_s=args.exit_timeout,
        restrict_admin_apis=not args.no_restrict_admin_apis,
        extra_args=args.extra,
    )
    server = TritonServer(options, quiet=not args.verbose)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        print(
            f"bge-triton: {signal.Signals(signum).name} received, draining in-flight requests "
            f"(up to {options.exit_timeout_s}s)",
            flush=True,
        )
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"bge-triton: starting tritonserver on {repository} (models: {', '.join(repository_models(repository))})",
        flush=True,
    )
    if not args.verbose:
        print(f"bge-triton: Triton's own log goes to {server.log_path}", flush=True)
    server.start()
    try:
        server.wait_ready(args.ready_timeout, report=True)
    except LauncherError as exc:
        if not stopping:
            print(f"bge-triton: {exc}", file=sys.stderr, flush=True)
        server.stop()
        return 1
    print(
        f"bge-triton: ready - HTTP {args.host}:{args.http_port}, gRPC {args.host}:{args.grpc_port}, "
        f"metrics {args.host}:{args.metrics_port}/metrics",
        flush=True,
    )
    assert server.process is not None
    code = server.process.wait()
    print(f"bge-triton: tritonserver stopped (exit code {code})", flush=True)
    return 0 if stopping and code in (0, -signal.SIGTERM) else code


if __name__ == "__main__":
    sys.exit(main())
