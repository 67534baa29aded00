"""Which tritonserver to run: a system install (NVIDIA's container) or the ``nvidia-pytriton`` wheel.

A system install is used as it is, backends and all. The wheel carries the server binary, the Python
backend and one backend stub per Python version, but not in the layout Triton expects: the stub must
sit beside ``libtriton_python.so`` and the bundled shared libraries must be on ``LD_LIBRARY_PATH``;
``TritonDistribution.backend_directory`` assembles that layout.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
        """Lay out ``<where>/python/{libtriton_python.so, utils, stub}`` as Triton expects.

        The stub is copied, not linked: Triton's Python backend chmods it at every model load, which
        fails (and no model loads) for a non-root user when the file is root's, as in the images.
        """
        python_dir = where / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for source in (self.backend_lib, self.backend_utils, self.stub):
            target = python_dir / source.name
            if target.is_symlink() or target.exists():
                target.unlink()
            if source == self.stub:
                shutil.copy2(source, target)
            else:
                target.symlink_to(source)
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

    1. ``home`` (bge-triton's ``--home`` flag), else the ``BGE_TRITON_HOME`` environment variable: a
       system install that must exist (a wrong path is an error, not a silent fallback);
    2. ``/opt/tritonserver`` if it holds ``bin/tritonserver`` (NVIDIA's tritonserver images);
    3. the ``nvidia-pytriton`` wheel.
    """
    if home is not None:  # bge-triton's settings fill it from the flag or the variable alike
        return SystemTriton.at(home, f"--home / {TRITON_HOME_ENV}")
    if environ.get(TRITON_HOME_ENV):
        return SystemTriton.at(Path(environ[TRITON_HOME_ENV]), TRITON_HOME_ENV)
    if (system_home / "bin" / "tritonserver").exists():
        return SystemTriton.at(system_home, f"found at {system_home}")
    return TritonDistribution.find()
