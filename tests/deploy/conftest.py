"""Fixtures for the deployment tests: rendered kustomize overlays, Dockerfiles and the compose file.

Everything is parsed once per session and exposed through small objects with lookups, so the
tests read as statements about the deployment ("the Triton container's flags", "the gateway's
env") rather than as dictionary digging.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("cpu", "gpu")
Manifest = dict[str, Any]


class Flags(dict[str, list[str]]):
    """Command-line flags by name (without ``--``); a flag may repeat, hence lists."""

    def one(self, name: str) -> str:
        values = self.get(name, [])
        assert len(values) == 1, f"--{name} given {len(values)} times: {values}"
        return values[0]


def parse_flags(argv: list[str]) -> Flags:
    """``--name=value`` / ``--name value`` / bare ``--switch`` -> Flags."""
    flags = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        assert arg.startswith("--"), f"unexpected positional argument {arg!r} in {argv}"
        name, eq, value = arg[2:].partition("=")
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("--"):
                value, i = nxt, i + 1
        flags.setdefault(name, []).append(value)
        i += 1
    return flags


def runs_launcher(argv: list[str]) -> bool:
    """The command line runs our ``bge-triton`` launcher with its watchdog (restarts on a dead stub)."""
    return bool(argv) and Path(argv[0]).name == "bge-triton" and "--no-watchdog" not in argv


def tritonserver_flags(argv: list[str]) -> Flags:
    """The flags ``tritonserver`` actually receives for a container command line.

    Both images run our ``bge-triton`` launcher, which adds flags of its own (admin-API
    restriction, model-control mode); ask the launcher itself rather than restating it here.
    """
    program, args = Path(argv[0]).name, argv[1:]
    if program == "tritonserver":
        return parse_flags(args)
    assert program == "bge-triton", f"unknown Triton entry point {argv[0]!r}"
    # Imported here, not at the top: a broken launcher should fail only the tests that use it.
    from bge_deploy.serving.launcher import TritonSettings

    options = TritonSettings.from_cli(args).server_options()
    command = options.command(Path("tritonserver"), Path("/backends"))
    return parse_flags(command[1:])


@dataclass(frozen=True)
class Rendered:
    """One overlay's ``kubectl kustomize`` output, with lookups by kind and name."""

    overlay: str
    text: str
    docs: list[Manifest]

    def all(self, kind: str) -> list[Manifest]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> Manifest:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def pod_specs(self) -> dict[str, Manifest]:
        """Pod specs of every workload, keyed ``Kind/name``."""
        return {
            f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
            for d in self.docs
            if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
        }

    def container(self, kind: str, name: str, container: str) -> Manifest:
        spec = self.one(kind, name)["spec"]["template"]["spec"]
        return next(c for c in spec["containers"] if c["name"] == container)

    @property
    def triton_pod(self) -> Manifest:
        return self.one("Deployment", "triton")["spec"]["template"]["spec"]

    @property
    def triton(self) -> Manifest:
        return self.container("Deployment", "triton", "triton")

    @property
    def gateway(self) -> Manifest:
        return self.container("Deployment", "bge-gateway", "gateway")

    @property
    def triton_argv(self) -> list[str]:
        return [*self.triton.get("command", []), *self.triton.get("args", [])]

    def triton_flags(self) -> Flags:
        return tritonserver_flags(self.triton_argv)

    def runs_launcher(self) -> bool:
        return runs_launcher(self.triton_argv)

    @staticmethod
    def env(container: Manifest) -> dict[str, Manifest]:
        """A container's env entries by name (the whole entry: value or valueFrom)."""
        return {e["name"]: e for e in container.get("env", [])}


def render(overlay: str) -> Rendered:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the kustomize overlays cannot be rendered (install kubectl >= 1.27)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return Rendered(overlay, proc.stdout, [d for d in yaml.safe_load_all(proc.stdout) if d])


@pytest.fixture(scope="session")
def rendered_overlays() -> dict[str, Rendered]:
    return {name: render(name) for name in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered_overlays: dict[str, Rendered]) -> Rendered:
    """Each overlay in turn: properties every deployment flavour must have."""
    return rendered_overlays[request.param]


@pytest.fixture
def cpu(rendered_overlays: dict[str, Rendered]) -> Rendered:
    return rendered_overlays["cpu"]


@pytest.fixture
def gpu(rendered_overlays: dict[str, Rendered]) -> Rendered:
    return rendered_overlays["gpu"]


@dataclass(frozen=True)
class Dockerfile:
    """The few instructions the tests compare with the manifests (no build, no Docker needed)."""

    path: Path
    base: str
    expose: tuple[int, ...]
    user: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        args: dict[str, str] = {}
        stages: set[str] = set()
        fields: dict[str, Any] = {"base": "", "expose": (), "user": "", "entrypoint": (), "cmd": ()}
        for line in path.read_text().replace("\\\n", " ").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            instruction, _, rest = line.strip().partition(" ")
            instruction, rest = instruction.upper(), rest.strip()
            if instruction == "ARG" and "=" in rest and not fields["base"]:
                key, _, value = rest.partition("=")
                args[key] = value
            elif instruction == "FROM":
                words = rest.split()
                base = words[0]
                if len(words) == 3 and words[1].upper() == "AS":
                    stages.add(words[2])
                if base not in stages:  # a stage built on an earlier one keeps that one's base image
                    fields["base"] = args.get(base.strip("${}"), base) if base.startswith("$") else base
            elif instruction == "EXPOSE":
                fields["expose"] = tuple(int(p.split("/")[0]) for p in rest.split())
            elif instruction == "USER":
                fields["user"] = rest
            elif instruction in ("ENTRYPOINT", "CMD"):
                value = yaml.safe_load(rest) if rest.startswith("[") else shlex.split(rest)
                fields[instruction.lower()] = tuple(value)
        return cls(path=path, **fields)

    @property
    def argv(self) -> list[str]:
        return [*self.entrypoint, *self.cmd]

    def triton_flags(self) -> Flags:
        """What tritonserver gets when the image runs with its default command."""
        return tritonserver_flags(self.argv)

    def runs_launcher(self) -> bool:
        return runs_launcher(self.argv)


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, Dockerfile]:
    """Dockerfiles keyed by stem: gateway, triton-cpu, triton-gpu, export."""
    return {
        p.name.removesuffix(".Dockerfile"): Dockerfile.parse(p)
        for p in sorted((DEPLOY / "docker").glob("*.Dockerfile"))
    }


@dataclass(frozen=True)
class Compose:
    """deploy/compose.yaml as written (``${VAR}`` interpolation left unexpanded)."""

    data: Manifest

    def service(self, name: str) -> Manifest:
        return self.data["services"][name]

    def triton_flags(self) -> Flags:
        return tritonserver_flags(self.service("triton")["command"])

    def runs_launcher(self) -> bool:
        return runs_launcher(self.service("triton")["command"])


@pytest.fixture(scope="session")
def compose() -> Compose:
    return Compose(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


@pytest.fixture(scope="session")
def adapter_values() -> Manifest:
    return yaml.safe_load((DEPLOY / "k8s" / "monitoring" / "prometheus-adapter-values.yaml").read_text())
