"""Published model repositories: versioned folders and one atomic pointer, written by export, read by pods.

Layout under a publish root (a Kubernetes PVC, a shared volume)::

    versions/000007-20261202T201500Z/   one complete model repository per export (sequence, UTC time)
    versions/.staging-.../       an export in progress (never pointed at)
    CURRENT                      the name of the version pods should serve

``bge-export --publish-root`` writes a new version beside the old ones and then replaces ``CURRENT``
with a rename, so a reader sees either the old version or the new one, never a half-written folder.
Pods copy the current version into their own volume when they start (``bge-stage``): a later export
or a prune never changes what a running pod serves, and a watchdog restart finds the same models.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

VERSIONS = "versions"
CURRENT = "CURRENT"
STAGING_PREFIX = ".staging-"
# Versions kept after a publish, the current one included: the previous stays for a rollback
# (write its name into CURRENT) and for a pod still copying it when the new one lands.
KEEP_VERSIONS = 2


class NotPublishedError(LookupError):
    """No complete version has been published under this root (yet)."""


@dataclass(frozen=True)
class Version:
    name: str
    path: Path


def current(root: Path) -> Version:
    """The version ``CURRENT`` names; NotPublishedError while there is none."""
    pointer = root / CURRENT
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise NotPublishedError(f"{root} has no {CURRENT} file: nothing has been published there yet") from None
    if not name or "/" in name or name.startswith("."):
        raise NotPublishedError(f"{pointer} names {name!r}, which is not a version folder")
    path = root / VERSIONS / name
    if not path.is_dir():
        raise NotPublishedError(f"{pointer} names {name!r}, but {path} does not exist")
    return Version(name, path)


def versions(root: Path) -> list[Version]:
    """Complete versions, oldest first (names start with a zero-padded sequence number)."""
    folder = root / VERSIONS
    if not folder.is_dir():
        return []
    return [
        Version(p.name, p) for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(STAGING_PREFIX)
    ]


def _new_name(root: Path) -> str:
    """``<sequence>-<UTC time>``: the sequence orders versions even when the clock steps back."""
    numbers = [int(v.name.split("-", 1)[0]) for v in versions(root) if v.name.split("-", 1)[0].isdigit()]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{max(numbers, default=0) + 1:06d}-{stamp}"


@contextmanager
def new_version(root: Path, keep: int = KEEP_VERSIONS) -> Iterator[Path]:
    """A staging folder to write a repository into; published (and older versions pruned) on success.

    On any exception the staging folder is removed and ``CURRENT`` is left as it was. One writer at a
    time (the export Job): staging folders left by a killed export are removed first.
    """
    (root / VERSIONS).mkdir(parents=True, exist_ok=True)
    for stale in (root / VERSIONS).glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    name = _new_name(root)
    staging = root / VERSIONS / f"{STAGING_PREFIX}{name}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = root / VERSIONS / name
    staging.rename(final)
    point_at(root, name)
    prune(root, keep)


def point_at(root: Path, name: str) -> None:
    """Make ``name`` the current version: write a temporary pointer, fsync it, rename it over CURRENT."""
    if not (root / VERSIONS / name).is_dir():
        raise NotPublishedError(f"no version {name!r} under {root / VERSIONS}")
    tmp = root / f".{CURRENT}.{os.getpid()}"
    with tmp.open("w", encoding="utf-8") as out:
        out.write(name + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, root / CURRENT)


def prune(root: Path, keep: int = KEEP_VERSIONS) -> list[str]:
    """Remove all but the newest ``keep`` versions, never the current one; returns the names removed."""
    live = current(root).name
    complete = versions(root)
    doomed = [v for v in complete[: max(0, len(complete) - keep)] if v.name != live]
    for version in doomed:
        shutil.rmtree(version.path, ignore_errors=True)
    return [v.name for v in doomed]


def copy_current(root: Path, destination: Path) -> Version:
    """Copy the current version's models into ``destination`` (a pod's own volume), replacing what is there.

    The copy lands in a hidden folder first and its models are moved in after, so a reader of
    ``destination`` never finds a half-copied model folder.
    """
    version = current(root)
    destination.mkdir(parents=True, exist_ok=True)
    incoming = destination / f".incoming-{version.name}"
    if incoming.exists():
        shutil.rmtree(incoming)
    shutil.copytree(version.path, incoming)
    for old in destination.iterdir():
        if old != incoming:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for model in incoming.iterdir():
        model.rename(destination / model.name)
    incoming.rmdir()
    return version


__all__ = [
    "CURRENT",
    "KEEP_VERSIONS",
    "VERSIONS",
    "NotPublishedError",
    "Version",
    "copy_current",
    "current",
    "new_version",
    "point_at",
    "prune",
    "versions",
]
