"""The Python-backend stubs of a running tritonserver: which they are, how one died, and cleaning up after them."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from bge_deploy.serving.process import exit_description, proc_cmdline, proc_stat

STUB_BINARY = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")


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
