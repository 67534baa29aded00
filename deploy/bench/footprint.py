"""The memory a served endpoint costs: every process behind its listening ports, children included.

A server is found by the TCP ports it listens on (the gateway's, Triton's gRPC port, a peer's), so
the benchmark measures what it loads and nothing else on the machine. Each listening process counts
with all its descendants (Triton's Python-backend stubs, uvicorn workers, a peer's worker processes).

Two sums per endpoint, in MiB, read after the load:

- **RSS**: what `ps` and most dashboards show. Pages shared between processes (Triton's shared-memory
  tensors, each stub's copy-on-write libraries) count once per process, so it over-counts.
- **PSS**: shared pages split among the processes that map them; the sum is close to what the
  pod's memory cgroup is charged, so it is the figure to size a Kubernetes memory request with.

psutil maps listening sockets to pids (a well-kept library: /proc/net/tcp{,6} joined with every
process's fd table by hand would repeat it); the process trees and sizes come from the /proc readers
that bge-serve and the tests use (`bge_deploy.serving.process`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from bge_deploy.serving.process import PROC, descendants, pss_bytes, rss_bytes

log = logging.getLogger("bge-bench")

MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    name: str
    rss_mib: float
    pss_mib: float | None


@dataclass(frozen=True)
class Footprint:
    """Memory of the processes serving one endpoint (None sums: nothing found listening)."""

    ports: tuple[int, ...]
    rss_mib: float | None
    pss_mib: float | None
    processes: list[ProcessMemory] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def listening_pids(ports: Iterable[int]) -> set[int]:
    """Pids of the processes with a TCP socket listening on any of `ports`."""
    import psutil

    wanted = set(ports)
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # without the right to read other processes' sockets
        log.warning("cannot read other processes' sockets here: served memory is not measured")
        return set()
    return {
        conn.pid
        for conn in connections
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in wanted and conn.pid
    }


def serving_pids(pids: Iterable[int]) -> list[int]:
    """The listening processes and all their descendants, once each, without this process.

    Launchers above them are not counted: in Kubernetes tritonserver and the gateway run as the pod's
    own processes, with no `bge-serve` above them.
    """
    found: dict[int, None] = {}
    for pid in sorted(pids):
        for member in (pid, *descendants(pid)):
            if member != os.getpid():
                found.setdefault(member)
    return list(found)


def process_memory(pid: int) -> ProcessMemory | None:
    """RSS and PSS of one process; None once it is gone (or a zombie, which has no resident set)."""
    rss = rss_bytes(pid)
    if not rss:
        return None
    try:
        name = (PROC / str(pid) / "comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        name = "?"
    pss = pss_bytes(pid)
    return ProcessMemory(pid, name, rss / MIB, None if pss is None else pss / MIB)


def measure(ports: Iterable[int]) -> Footprint:
    """RSS and PSS of whatever serves `ports` now."""
    ports = tuple(sorted(set(ports)))
    members = [m for m in (process_memory(pid) for pid in serving_pids(listening_pids(ports))) if m]
    if not members:
        return Footprint(ports, None, None)
    pss = [m.pss_mib for m in members]
    return Footprint(
        ports=ports,
        rss_mib=sum(m.rss_mib for m in members),
        pss_mib=None if any(p is None for p in pss) else sum(p for p in pss if p is not None),
        processes=sorted(members, key=lambda m: -m.rss_mib),
    )
