"""Restart tritonserver when it can no longer serve, saying why in one line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bge_deploy.serving.install import LauncherError
from bge_deploy.serving.process import ManagedProcess
from bge_deploy.serving.triton import TritonServer

log = logging.getLogger("bge-triton")


@dataclass(frozen=True)
class WatchdogOptions:
    """When the launcher restarts tritonserver by itself (flags ``--watchdog-*``)."""

    poll_s: float = 0.25
    """How often the stubs and the process are checked (cheap /proc reads)."""
    not_ready_s: float = 15.0
    """A server that was ready and then stays not ready (or does not answer) this long is restarted."""
    grace_s: float = 5.0
    """Before SIGKILL, in-flight work of the healthy models gets up to this long to finish; the kill comes as
    soon as Triton logs that none is left (`TritonServer.stop_drained`). Triton cannot unload a model whose
    stub is dead, so waiting for its own exit would only delay recovery."""
    dead_stub_grace_s: float = 1.0
    """The grace when a stub died. Requests that stub had taken never get an answer from Triton (the CPU
    encoder answers each batch after ``execute`` returns, through response senders that died with the stub),
    so Triton would report them in flight for the whole grace: they get their error and the server its
    restart this much sooner. Work on other instances still has this long to finish."""
    max_restarts: int = 5
    """Restarts allowed within ``window_s``; one more and the launcher exits 1, so the orchestrator
    sees a crash loop instead of a server that flaps forever."""
    window_s: float = 600.0


@dataclass(frozen=True)
class Problem:
    """Why the server cannot serve, in one line, and whether a stub died (then the shorter grace applies)."""

    reason: str
    stub_died: bool = False


class Watchdog:
    """Restarts tritonserver when it can no longer serve, saying why in one line.

    Triggers: a Python-backend stub died (Triton itself would keep reporting the model ready while
    every request to it fails), tritonserver exited on its own, or the server stayed not ready for
    ``not_ready_s`` after having been ready. The restart is SIGTERM (Triton closes HTTP at once, so
    readiness probes fail within one poll, and refuses new gRPC work), SIGKILL once Triton has no inference
    in flight (at most ``grace_s``),
    clean-up of the stubs' shared memory, start, and wait until every model is ready again.
    """

    def __init__(
        self,
        server: TritonServer,
        options: WatchdogOptions,
        ready_timeout_s: float,
        stopping: Callable[[], bool],
    ) -> None:
        self.server = server
        self.options = options
        self.ready_timeout_s = ready_timeout_s
        self.stopping = stopping
        self.restarts: list[float] = []
        self._not_ready_since: float | None = None
        self._next_ready_check = 0.0

    def problem(self) -> Problem | None:
        """Why the server cannot serve now, or None. Cheap enough to ask every ``poll_s``."""
        process = self.server.process
        if process is None:
            return Problem("tritonserver is not running")
        if process.poll() is not None:
            return Problem(f"tritonserver exited on its own (code {process.returncode})")
        for stub in self.server.stubs:
            death = stub.death()
            if death is not None:
                return Problem(f"the Python backend stub of model '{stub.model}' (pid {stub.pid}) {death}", True)
        now = time.monotonic()
        if now < self._next_ready_check:
            return None
        self._next_ready_check = now + 1.0
        if self.server.is_ready():
            self._not_ready_since = None
            return None
        self._not_ready_since = self._not_ready_since or now
        if now - self._not_ready_since >= self.options.not_ready_s:
            return Problem(f"tritonserver has not been ready for {now - self._not_ready_since:.0f}s")
        return None

    def restart(self, problem: Problem) -> bool:
        """Restart tritonserver; False when the restart budget is spent or the restart failed."""
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < self.options.window_s] + [now]
        budget = f"{self.options.max_restarts} in {self.options.window_s / 60:g} min"
        if len(self.restarts) > self.options.max_restarts:
            log.info(f"watchdog: {problem.reason}; already restarted {budget}, giving up")
            return False
        log.info(
            f"watchdog: {problem.reason}; restarting tritonserver (restart {len(self.restarts)}, at most {budget})"
        )
        grace_s = self.options.grace_s
        if problem.stub_died:
            grace_s = min(grace_s, self.options.dead_stub_grace_s)
        code = self.server.stop_drained(grace_s)
        log.info(f"watchdog: old tritonserver gone (exit code {code}); starting a new one")
        self._not_ready_since = None
        if self.stopping():
            return False
        self.server.start()
        try:
            self.server.wait_ready(self.ready_timeout_s, abort=self.stopping)
        except LauncherError as exc:
            if not self.stopping():
                log.info(f"watchdog: the restarted tritonserver did not become ready: {exc}")
            return False
        log.info(f"watchdog: tritonserver ready again {time.monotonic() - now:.1f}s after the failure was seen")
        return True

    def supervise(self, others: Sequence[ManagedProcess] = ()) -> int | None:
        """Keep the server serving until a stop is asked for; the exit code when the watchdog gives up.

        ``others`` (bge-serve's gateway) are watched too: one that exits on its own ends supervision with 1.
        """
        while not self.stopping():
            problem = self.problem()
            if problem is not None and not self.stopping() and not self.restart(problem):
                return None if self.stopping() else 1
            for other in others:
                if other.poll() is not None and not self.stopping():
                    log.info("%s exited unexpectedly (code %s); stopping", other.name, other.poll())
                    return 1
            time.sleep(self.options.poll_s)
        return None
