"""podman for the image tests: a local stand-in for python:3.11-slim, image builds, containers, kube play.

No registry image can be pulled on the CI machines, so ``python:3.11-slim`` is replaced by a base
bootstrapped from Debian's own packages (bookworm, Python 3.11, the same as the slim image) and
passed with ``podman build --from``. Debian marks its Python externally managed and has no
``python`` command or shared libpython unless asked; the stand-in sets ``PIP_BREAK_SYSTEM_PACKAGES=1``
and installs ``python-is-python3`` and ``libpython3.11`` so it behaves as the slim image does. The
base and every build layer stay in podman's storage, so later runs rebuild only what changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = REPO / "tests" / "deploy" / "containers.conf"
BASE_IMAGE = "localhost/bge-test-base:bookworm-py311"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "libpython3.11", "ca-certificates")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# Where this machine keeps the CPU build of torch (pip's find-links here): the export image takes it
# from there instead of the CPU wheel index, which these machines cannot reach.
HOST_WHEELS = Path(os.environ.get("PIP_FIND_LINKS", "/opt/wheels"))

# The CPU images under the tags the CPU overlay runs; the GPU image's own layers on the local base.
IMAGES = {
    "gateway": "localhost/bge-gateway:0.1.0",
    "triton-cpu": "localhost/bge-triton-cpu:0.1.0",
    "export": "localhost/bge-export-cpu:0.1.0",
    "triton-gpu": "localhost/bge-triton-gpu-layers:test",
}


class PodmanError(RuntimeError):
    pass


def _search_path() -> str:
    """This process's PATH plus the system's sbin folders (where Debian puts runc and iptables)."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    extra = [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in parts]
    return os.pathsep.join([*parts, *extra])


@dataclass(frozen=True)
class Podman:
    binary: str

    @classmethod
    def require(cls) -> Podman:
        binary = shutil.which("podman", path=_search_path())
        if binary is None:
            pytest.skip("podman is not installed: apt-get install podman runc mmdebstrap (.ci/run does)")
        if shutil.which("runc", path=_search_path()) is None:
            pytest.skip("runc is not installed: apt-get install runc (crun fails on cgroup v1 hosts)")
        return cls(binary)

    @property
    def env(self) -> dict[str, str]:
        # runc and the iptables that netavark runs live in /usr/sbin, which a minimal PATH lacks.
        return {**os.environ, "PATH": _search_path(), "CONTAINERS_CONF": str(CONTAINERS_CONF)}

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 900, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            input=input_text,
            check=False,
        )
        if check and proc.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:3])} ... exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc

    def command(self, *args: str) -> list[str]:
        """A podman command line for ManagedProcess (foreground ``podman run`` forwards SIGTERM)."""
        return [self.binary, *args]

    def exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0

    def base_image(self, workdir: Path) -> str:
        """The python:3.11-slim stand-in, bootstrapped once (about 40 s) and kept in podman's storage."""
        if self.exists(BASE_IMAGE):
            return BASE_IMAGE
        if shutil.which("mmdebstrap", path=_search_path()) is None:
            pytest.skip("mmdebstrap is not installed (apt-get install mmdebstrap): no local base image")
        rootfs = workdir / "rootfs.tar"
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(rootfs)],
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
            env=self.env,  # mmdebstrap runs chroot and friends from /usr/sbin
        )
        self(
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            "ENV PIP_BREAK_SYSTEM_PACKAGES=1",
            str(rootfs),
            BASE_IMAGE,
        )
        rootfs.unlink()
        return BASE_IMAGE

    def build(self, dockerfile: str, tag: str, base: str, build_args: Sequence[str] = ()) -> float:
        """``podman build`` from the repository root with the local base; seconds it took."""
        started = time.monotonic()
        volumes = ["-v", f"{HOST_CA}:{HOST_CA}:ro"]
        if HOST_WHEELS.is_dir():
            volumes += ["-v", f"{HOST_WHEELS}:{HOST_WHEELS}:ro"]
        args = [f"--build-arg={a}" for a in build_args]
        self(
            "build",
            "--layers",
            "--network=host",
            *volumes,
            f"--from={base}",
            *args,
            "-f",
            str(REPO / "deploy" / "docker" / f"{dockerfile}.Dockerfile"),
            "-t",
            tag,
            str(REPO),
            timeout=1800,
        )
        return time.monotonic() - started

    def inspect(self, what: str, fmt: str) -> str:
        return self("inspect", "--format", fmt, what).stdout.strip()

    def image_config(self, image: str) -> dict:
        return json.loads(self("image", "inspect", image).stdout)[0]["Config"]

    def create_secret(self, name: str, data: dict[str, str]) -> None:
        """A Kubernetes-style secret for kube play: a JSON object of base64 values (podman 4.3 reads
        secretKeyRef that way, and fails on the YAML it stores for a played Secret: podman#16269)."""
        import base64

        self("secret", "rm", name, check=False)
        payload = json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in data.items()})
        self("secret", "create", name, "-", input_text=payload)


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
