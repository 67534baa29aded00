"""Dockerfiles and the single-box compose file agree on names, ports, users and Triton flags.

Nothing is built (there is no Docker engine in CI): the files are parsed and compared with each
other and with the ports and names of docs/CONTRACT.md. Needs neither Docker nor kubectl.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

MODEL = "bge-large-zh-v1.5"
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
GATEWAY_PORT = 30000
ADMIN_KEY_ENV = "BGE_TRITON_ADMIN_KEY"
RESTRICTED_APIS = {"model-repository", "shared-memory", "trace", "logging", "statistics"}
# 24.12: the first release with the fix for the gRPC-cancellation SIGSEGV (server#7368, RELIABILITY.md).
TRITON_GPU_BASE = "nvcr.io/nvidia/tritonserver:24.12-py3"
REPO = Path(__file__).resolve().parents[2]
NVIDIA_IMAGE = re.compile(r"nvcr\.io/nvidia/(tritonserver|tensorrt):([0-9][^\s\"'`]*)")


def test_deploy_constants_match_the_code() -> None:
    """The contract values restated by these tests are the defaults the code itself uses."""
    # Imported here: a broken package module fails this test, not the collection of the file.
    from bge_client.gateway.settings import GatewaySettings
    from bge_deploy.serving.admin_key import ADMIN_KEY_ENV as LAUNCHER_ADMIN_KEY_ENV
    from bge_deploy.serving.admin_key import RESTRICTED_APIS as LAUNCHER_RESTRICTED
    from bge_deploy.serving.triton import ServerOptions
    from bge_model_repository.contract import DEFAULT_GRPC_URL, DEFAULT_HTTP_URL, DEFAULT_MODEL

    assert DEFAULT_MODEL == MODEL
    assert int(DEFAULT_HTTP_URL.rsplit(":", 1)[1]) == TRITON_PORTS["http"]
    assert int(DEFAULT_GRPC_URL.rsplit(":", 1)[1]) == TRITON_PORTS["grpc"]
    defaults = ServerOptions(model_repository=Path("/models"))
    assert (defaults.http_port, defaults.grpc_port, defaults.metrics_port) == tuple(TRITON_PORTS.values())
    assert set(LAUNCHER_RESTRICTED) == RESTRICTED_APIS
    assert LAUNCHER_ADMIN_KEY_ENV == ADMIN_KEY_ENV
    assert GatewaySettings.model_fields["port"].default == GATEWAY_PORT


def test_every_image_has_a_dockerfile(dockerfiles: dict[str, Any]) -> None:
    assert set(dockerfiles) == {"gateway", "triton-cpu", "triton-gpu", "export"}


def test_images_run_as_non_root(dockerfiles: dict[str, Any]) -> None:
    """Numeric uid:gid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd."""
    for name, dockerfile in dockerfiles.items():
        uid, _, gid = dockerfile.user.partition(":")
        assert uid.isdigit() and gid.isdigit() and int(uid) > 0, name


def test_exposed_ports(dockerfiles: dict[str, Any]) -> None:
    assert set(dockerfiles["triton-cpu"].expose) == set(TRITON_PORTS.values())
    assert set(dockerfiles["triton-gpu"].expose) == set(TRITON_PORTS.values())
    assert dockerfiles["gateway"].expose == (GATEWAY_PORT,)
    assert dockerfiles["export"].expose == ()


def test_triton_images_default_command(dockerfiles: dict[str, Any]) -> None:
    """`docker run IMAGE` serves /models on the contract's ports through our launcher and its watchdog."""
    for name in ("triton-cpu", "triton-gpu"):
        assert dockerfiles[name].runs_launcher(), name
        flags = dockerfiles[name].triton_flags()
        assert {p: int(flags.one(f"{p}-port")) for p in TRITON_PORTS} == TRITON_PORTS, name
        assert flags.one("model-repository") == "/models", name
        assert flags.one("model-control-mode") == "none", name
        assert set(flags.one("http-restricted-api").partition(":")[0].split(",")) == RESTRICTED_APIS, name
    assert dockerfiles["triton-cpu"].entrypoint == ("bge-triton",)
    # NVIDIA's entrypoint script stays in charge (Model Analyzer runs its own tritonserver command
    # in this image); the launcher is the CMD.
    assert dockerfiles["triton-gpu"].entrypoint == ()
    assert dockerfiles["triton-gpu"].cmd[0] == "bge-triton"


def test_gpu_images_share_nvidia_release(dockerfiles: dict[str, Any], compose: Any) -> None:
    """Triton 24.12 on NVIDIA's image; the GPU exporter builds on the same release's TensorRT."""
    assert dockerfiles["triton-gpu"].base == TRITON_GPU_BASE
    release = TRITON_GPU_BASE.split(":")[1].removesuffix("-py3")
    export_base = compose.service("export")["build"]["args"]["BASE"]
    assert export_base == f"nvcr.io/nvidia/tensorrt:{release}-py3"
    assert dockerfiles["export"].base.startswith("python:")  # the CPU default
    assert dockerfiles["gateway"].base.startswith("python:")
    assert dockerfiles["triton-cpu"].base.startswith("python:")


def test_every_nvidia_image_reference_is_one_release() -> None:
    """Dockerfiles, compose and the docs name one NVIDIA release: a plan built by another TensorRT won't load."""
    release = TRITON_GPU_BASE.split(":")[1].removesuffix("-py3")
    files = [
        *sorted((REPO / "deploy").rglob("*")),
        REPO / "README.md",
        REPO / "RELIABILITY.md",
        *sorted((REPO / "docs").rglob("*.md")),
    ]
    found: dict[str, set[str]] = {}
    for path in files:
        if not path.is_file() or path.suffix not in {".md", ".yaml", ".sh", ".Dockerfile", ".py"}:
            continue
        for image, tag in NVIDIA_IMAGE.findall(path.read_text(errors="replace")):
            found.setdefault(f"{image}:{tag}", set()).add(str(path.relative_to(REPO)))
    assert found, "no NVIDIA image named anywhere"
    allowed = {f"tritonserver:{release}-py3", f"tritonserver:{release}-py3-sdk", f"tensorrt:{release}-py3"}
    stray = {image: where for image, where in found.items() if image not in allowed}
    assert not stray, f"images of another release than {release}: {stray}"


def test_gateway_image_runs_the_gateway_module(dockerfiles: dict[str, Any]) -> None:
    assert dockerfiles["gateway"].argv == ["python", "-m", "bge_client.gateway"]


def test_compose_builds_from_existing_dockerfiles(compose: Any) -> None:
    for name, service in compose.data["services"].items():
        build = service["build"]
        context = (REPO / "deploy" / build["context"]).resolve()
        assert context == REPO, name
        assert (context / build["dockerfile"]).is_file(), name
        stem = Path(build["dockerfile"]).name.removesuffix(".Dockerfile")
        expected = {"triton-gpu": "bge-triton-gpu", "gateway": "bge-gateway", "export": "bge-export-gpu"}[stem]
        assert service["image"].split(":")[0] == expected, name


def test_compose_only_publishes_the_gateway(compose: Any) -> None:
    published = {name for name, s in compose.data["services"].items() if s.get("ports")}
    assert published == {"gateway"}
    assert compose.service("gateway")["ports"] == [f"{GATEWAY_PORT}:{GATEWAY_PORT}"]


def test_compose_gateway_env_matches_triton(compose: Any) -> None:
    """The gateway calls the triton service on its gRPC port, by the ensemble's name."""
    env = compose.service("gateway")["environment"]
    grpc_port = int(compose.triton_flags().one("grpc-port"))
    assert env["BGE_GATEWAY_TRITON_URL"] == f"triton:{grpc_port}"
    assert grpc_port == TRITON_PORTS["grpc"]
    assert int(env["BGE_GATEWAY_PORT"]) == GATEWAY_PORT
    assert env["BGE_GATEWAY_MODEL_NAME"] == MODEL
    assert env["BGE_GATEWAY_API_KEY"] is None  # passed through from the shell, never written here
    assert compose.service("gateway")["depends_on"]["triton"]["condition"] == "service_healthy"


def test_compose_triton(compose: Any) -> None:
    """Restricted admin APIs, model-ready healthcheck, shm, GPU, drain time, export first."""
    triton = compose.service("triton")
    flags = compose.triton_flags()
    assert {p: int(flags.one(f"{p}-port")) for p in TRITON_PORTS} == TRITON_PORTS
    assert set(triton["expose"]) == {str(p) for p in TRITON_PORTS.values()}
    assert compose.runs_launcher()
    for flag in ("http-restricted-api", "grpc-restricted-protocol"):
        assert set(flags.one(flag).partition(":")[0].split(",")) == RESTRICTED_APIS
    # The launcher reads the key from its environment; compose refuses to start without one.
    assert triton["environment"][ADMIN_KEY_ENV].startswith("${TRITON_ADMIN_KEY:?"), "key must be required"
    assert f"/v2/models/{MODEL}/ready" in " ".join(triton["healthcheck"]["test"])
    assert triton["shm_size"] == "1gb"
    assert _seconds(triton["stop_grace_period"]) > int(flags.one("exit-timeout-secs"))
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert triton["depends_on"]["export"]["condition"] == "service_completed_successfully"


def test_compose_export_writes_what_triton_reads(compose: Any) -> None:
    export = compose.service("export")
    flags = dict(arg[2:].split("=", 1) for arg in export["command"])
    assert flags["model"] == "BAAI/bge-large-zh-v1.5"
    assert flags["backend"] == "tensorrt"
    model_repository = compose.triton_flags().one("model-repository")
    assert flags["output"] == model_repository
    assert f"model-repository:{model_repository}" in export["volumes"]
    assert f"model-repository:{model_repository}:ro" in compose.service("triton")["volumes"]
    assert export["environment"]["HF_HUB_OFFLINE"] == "1"
    hf_mount = next(v for v in export["volumes"] if ":/hf-cache" in v)
    assert export["environment"]["HF_HOME"] == "/hf-cache" and hf_mount.endswith(":ro")


def _seconds(duration: str) -> int:
    """Compose durations used here: '40s' or '2m'."""
    unit = {"s": 1, "m": 60}[duration[-1]]
    return int(duration[:-1]) * unit
