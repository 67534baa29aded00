"""Starting, watching and stopping child processes: the one helper of bge-serve, bge-bench, the GPU check
and the tests.

``ManagedProcess`` runs a command with its output in a log file (or the terminal), waits until an
HTTP URL answers or a line appears in that log, and stops it the way a server expects: SIGTERM,
then SIGKILL if it overstays. The /proc readers tell what a process has become (children, RSS,
how it ended) without psutil.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

PROC = Path("/proc")


class ProcessError(RuntimeError):
    """A child that exited or did not become ready; the message carries its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout_s: float = 2.0, headers: Mapping[str, str] | None = None) -> tuple[int, object]:
    """(status, parsed body); status 0 when nothing answers (not listening yet, or gone)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


# -- /proc ---------------------------------------------------------------------------------------------------


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], ppid [1]); None if gone."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def _proc_kib(pid: int, file: str, key: str) -> int | None:
    """The `key:  N kB` line of /proc/<pid>/<file>, in bytes; None if the process or the line is absent."""
    try:
        for line in (PROC / str(pid) / file).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 once it is gone)."""
    return _proc_kib(pid, "status", "VmRSS:") or 0


def descendants(pid: int) -> list[int]:
    """Children, grandchildren and so on of ``pid`` (tritonserver's Python backend stubs, a server's workers)."""
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants (tritonserver plus its Python backend stubs)."""
    return rss_bytes(pid) + sum(rss_bytes(member) for member in descendants(pid))


def pss_bytes(pid: int) -> int | None:
    """Proportional set size: pages shared with other processes split among them (None where the kernel
    does not say, or the process is gone). Summed over a pod's processes it is close to what the
    memory cgroup is charged, where RSS counts every shared page once per process."""
    return _proc_kib(pid, "smaps_rollup", "Pss:")


def exit_description(stat: Sequence[str]) -> str:
    """How a zombie ended ("killed by SIGKILL", "exited with code 1"), from its /proc stat exit_code field."""
    status = int(stat[49]) if len(stat) > 49 else 0  # exit_code, as waitpid(2) reports it
    if status & 0x7F:
        return f"killed by {signal.Signals(status & 0x7F).name}"
    return f"exited with code {status >> 8}"


# -- one child process ---------------------------------------------------------------------------------------


class ManagedProcess:
    """A child process and its output.

    ``nice`` > 0 runs it at that lower CPU priority (its threads and children too).
    Output goes to ``log_path`` (None: this process's own stdout/stderr), or with ``capture`` through a
    pipe: each line is kept with the time it arrived (``lines``), handed to ``echo``, and written to
    ``log_path`` if given. Servers in production write their file directly; capture is for tools and tests
    that need to know when something was said.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        capture: bool = False,
        echo: Callable[[str], None] | None = None,
        nice: int = 0,
        keep_lines: int | None = None,
    ) -> None:
        self.name = name
        # `nice` (coreutils) execs the command in its place at the lower priority, which every thread and
        # child it starts inherits; Popen has no such option and a preexec_fn is unsafe in a threaded parent.
        self.command = ["nice", "-n", str(nice), *command] if nice else list(command)
        self.env = dict(os.environ if env is None else env)
        self.log_path = log_path
        self.capture = capture
        self.echo = echo
        self.lines: list[tuple[float, str]] = []
        """With ``capture``: (time.monotonic(), line) for every line of output so far (the last ``keep_lines``
        to ``2 x keep_lines`` of them when that is set, for a server that runs for weeks)."""
        self.keep_lines = keep_lines
        self.popen: subprocess.Popen[bytes] | None = None
        self._terminated: int | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def start(self) -> ManagedProcess:
        """Start the command; a restart appends to the same log."""
        self._terminated = None
        if self.capture:
            self.popen = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self._reader = threading.Thread(target=self._pump, args=(self.popen,), daemon=True)
            self._reader.start()
            return self
        if self.log_path is None:
            self.popen = subprocess.Popen(self.command, env=self.env)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def poll(self) -> int | None:
        """The exit code once it has ended, else None (also None before start)."""
        return None if self.popen is None else self.popen.poll()

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _pump(self, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        log = self.log_path.open("ab") if self.log_path is not None else None
        try:
            for raw in popen.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                self.lines.append((time.monotonic(), line))
                if self.keep_lines is not None and len(self.lines) > 2 * self.keep_lines:
                    del self.lines[: -self.keep_lines]
                if log is not None:
                    log.write(raw)
                    log.flush()
                if self.echo is not None:
                    self.echo(line)
        finally:
            if log is not None:
                log.close()

    def log(self) -> str:
        if self.capture:
            return "\n".join(line for _, line in list(self.lines))
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def said_since(self, text: str, since: float) -> bool:
        """With ``capture``: a line containing ``text`` arrived at or after ``since`` (time.monotonic())."""
        for arrived, line in reversed(list(self.lines)):
            if arrived < since:
                return False
            if text in line:
                return True
        return False

    def _check_alive(self, waiting_for: str) -> None:
        code = self.poll()
        if code is not None:
            raise ProcessError(f"{self.name} exited (code {code}) before {waiting_for}:\n{self.log_tail()}")

    def wait_until(
        self,
        ready: Callable[[], bool],
        what: str,
        timeout_s: float,
        poll_s: float = 0.2,
        abort: Callable[[], bool] | None = None,
    ) -> None:
        """Poll ``ready()`` until it holds; raise ProcessError if the process exits, time runs out, or ``abort()``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive(what)
            if abort is not None and abort():
                raise ProcessError(f"stopped while waiting for {what}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.name}: no {what} after {timeout_s:.0f}s:\n{self.log_tail()}")
            time.sleep(poll_s)

    def wait_http(self, url: str, timeout_s: float, any_answer: bool = False) -> None:
        """Until ``url`` answers 200 (or anything at all, with ``any_answer``)."""

        def answered() -> bool:
            status, _ = get_json(url)
            return status == 200 or (any_answer and status != 0)

        self.wait_until(answered, f"answer from {url}", timeout_s)

    def wait_line(self, text: str, timeout_s: float) -> str:
        """Until a line containing ``text`` is in the log; that line."""
        found: list[str] = []

        def seen() -> bool:
            found.extend(line for line in self.log().splitlines() if text in line)
            return bool(found)

        self.wait_until(seen, f"'{text}' in its log", timeout_s)
        return found[0]

    def terminate(self) -> None:
        """SIGTERM once per started process: servers drain on the first; a second would only repeat it."""
        if self.running() and self._terminated != self.pid:
            self._terminated = self.pid
            self.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.running():
            self.popen.kill()  # type: ignore[union-attr]

    def wait(self, timeout_s: float | None = None) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, up to ``timeout_s`` to exit, then SIGKILL; the exit code (None if never started)."""
        if self.popen is None:
            return None
        self.terminate()
        try:
            code = self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)  # the last lines
        return code

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
