"""The images, built from their Dockerfiles with podman and run the way users run them.

- Every CPU image builds on a local stand-in for python:3.11-slim (tests/podman_support.py); the GPU
  Triton image's own layers build on it too. NVIDIA's base images themselves cannot be pulled here
  and are not exercised.
- Containers: the export image exports a model into a folder, the triton-cpu image serves it as its
  declared non-root user, the gateway image fronts it, and the openai SDK gets the model's vectors
  through them; SIGTERM stops each with exit code 0.
- The CPU overlay, rendered by kustomize, runs under ``podman kube play``: the Job's container (kube
  play runs no Jobs) publishes into the claim's volume, then the Triton and gateway pods start from
  their Deployments' pod templates and the gateway answers on :30000. Jobs, HPA, NetworkPolicies,
  PDBs and Services are not runnable there (test_manifests validates them by schema).
"""

from __future__ import annotations

import copy
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from podman_support import IMAGES, Podman, wait_for

from bge_deploy.serving.admin_key import ADMIN_HEADER
from bge_deploy.serving.argv_secret import PLACEHOLDER
from bge_deploy.serving.launched import READY_LINE
from bge_deploy.serving.process import ManagedProcess, free_port, get_json

MODEL = "bge-large-zh-v1.5"
TEXTS = ["你好，世界", "今天天气怎么样", "Triton serves embeddings"]
ADMIN_KEY = "test-admin-key"
API_KEY = "sk-test-key"
PLAY_NETWORK = "bge-test"
PLAYED_PORTS = (8000, 8001, 8002, 30000)  # kube play publishes each containerPort on the host


@pytest.fixture(scope="module")
def podman() -> Podman:
    return Podman.require()


@pytest.fixture(scope="module")
def images(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = podman.base_image(tmp_path_factory.mktemp("base"))
    podman.build("gateway", IMAGES["gateway"], base)
    podman.build("triton-cpu", IMAGES["triton-cpu"], base)
    podman.build("export", IMAGES["export"], f"{base}", ["TORCH_INDEX=", "PIP_FIND_LINKS=/opt/wheels"])
    return IMAGES


def test_every_image_builds_and_runs_as_the_user_it_declares(
    podman: Podman, images: dict[str, str], dockerfiles: dict[str, Any], tmp_path: Path
) -> None:
    """The CPU images as the overlays run them; the GPU image's COPY/RUN steps on the local base."""
    podman.build("triton-gpu", IMAGES["triton-gpu"], podman.base_image(tmp_path))
    for name, image in images.items():
        dockerfile = dockerfiles[name]
        config = podman.image_config(image)
        assert config.get("User") == dockerfile.user, name
        uid = podman("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip()
        assert uid == dockerfile.user.split(":")[0] and uid != "0", name
    # Each image carries the console scripts its deployments call.
    for image, scripts in (
        (images["triton-cpu"], ("bge-triton", "bge-stage")),
        (images["triton-gpu"], ("bge-triton", "bge-stage")),
        (images["export"], ("bge-export", "bge-build-engine")),
        (images["gateway"], ("bge-gateway",)),
    ):
        look = f"for s in {' '.join(scripts)}; do command -v $s || exit 1; done"
        found = podman("run", "--rm", "--entrypoint", "sh", image, "-c", look, check=False)
        assert found.returncode == 0 and len(found.stdout.split()) == len(scripts), (image, found.stdout)


@contextmanager
def _serve_containers(podman: Podman, images: dict[str, str], repository: Path, names: str) -> Iterator[Any]:
    """triton-cpu then gateway, foreground ``podman run`` under the project's process helper; yields both, the
    gateway's port and Triton's HTTP port."""
    http, grpc, metrics, gateway = (free_port() for _ in range(4))
    triton = ManagedProcess(
        "triton-container",
        podman.command(
            "run", "--rm", "--name", f"{names}-triton", "--network=host", "--shm-size=256m",
            "-v", f"{repository}:/models:ro", "-e", f"BGE_TRITON_ADMIN_KEY={ADMIN_KEY}",
            images["triton-cpu"],
            "--model-repository=/models", "--host=127.0.0.1", f"--http-port={http}", f"--grpc-port={grpc}",
            f"--metrics-port={metrics}", "--exit-timeout=10", "--verbose",
        ),
        env=podman.env,
        capture=True,
    )  # fmt: skip
    front = ManagedProcess(
        "gateway-container",
        podman.command(
            "run", "--rm", "--name", f"{names}-gateway", "--network=host",
            "-e", f"BGE_GATEWAY_TRITON_URL=127.0.0.1:{grpc}", "-e", f"BGE_GATEWAY_PORT={gateway}",
            "-e", "BGE_GATEWAY_HOST=127.0.0.1", "-e", f"BGE_GATEWAY_MODEL_NAME={MODEL}",
            images["gateway"],
        ),
        env=podman.env,
        capture=True,
    )  # fmt: skip
    with triton:
        triton.wait_line(READY_LINE, timeout_s=240)
        with front:
            front.wait_http(f"http://127.0.0.1:{gateway}/health", timeout_s=120)
            yield triton, front, gateway, http


def _reference(minilm_dir: Path) -> np.ndarray:
    from bge_export.parity import reference_embeddings

    return reference_embeddings(minilm_dir, TEXTS, 256)


def _check_vectors(vectors: np.ndarray, reference: np.ndarray) -> None:
    assert vectors.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.min() > 0.9999, cosines


def test_export_triton_and_gateway_containers_answer_the_openai_sdk(
    podman: Podman, images: dict[str, str], tmp_path: Path, minilm_dir: Path
) -> None:
    import openai

    repository = tmp_path / "models"
    repository.mkdir()
    started = time.monotonic()
    export = podman(
        "run", "--rm", "--user=1000:1000", "-v", f"{repository}:/models:U", "-v", f"{minilm_dir}:/model:ro",
        "--tmpfs=/tmp", "-e", "HOME=/tmp", "-e", "HF_HUB_OFFLINE=1",
        images["export"],
        "--model=/model", f"--name={MODEL}", "--output=/models", "--workdir=/tmp/export", "--intra-op-threads=1",
        timeout=900,
    )  # fmt: skip
    assert "fp32 parity: min cosine" in export.stderr and (repository / MODEL / "config.pbtxt").is_file()
    export_s = time.monotonic() - started

    reference = _reference(minilm_dir)
    with _serve_containers(podman, images, repository, "bge-test") as (triton, gateway, port, triton_http):
        assert podman("exec", "bge-test-triton", "id", "-u").stdout.strip() == "1000"
        # The image's argv_secret helper: the admin key works, yet no process in the container shows it.
        index = urllib.request.Request(
            f"http://127.0.0.1:{triton_http}/v2/repository/index", data=b"{}", headers={ADMIN_HEADER: ADMIN_KEY}
        )
        with urllib.request.urlopen(index, timeout=10) as answer:
            assert answer.status == 200
        cmdlines = podman("exec", "bge-test-triton", "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
        assert "tritonserver" in cmdlines and PLACEHOLDER in cmdlines and ADMIN_KEY not in cmdlines, cmdlines
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY")
        response = client.embeddings.create(model=MODEL, input=TEXTS)
        _check_vectors(np.array([d.embedding for d in response.data]), reference)
        assert response.usage.prompt_tokens > len(TEXTS)
        for process in (gateway, triton):  # SIGTERM through podman run's signal proxy
            stopped = time.monotonic()
            process.terminate()
            assert process.wait(timeout_s=60) == 0, process.log_tail()
            assert time.monotonic() - stopped < 45, f"{process.name} took the whole grace period"
    assert export_s < 900


# -- kube play ---------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def playable(cpu: Any) -> list[dict]:
    """The CPU overlay's Deployments as podman 4.3 can play them; each change has a reason:

    - a Pod per Deployment, one replica, restartPolicy OnFailure: podman 4.3 restarts init
      containers for ever under restartPolicy Always (podman#16343);
    - no Memory emptyDir at /dev/shm: podman makes it a root-owned 0755 tmpfs where the kubelet makes
      emptyDirs world-writable; the pod's own /dev/shm (1777) stands in;
    - everything else (images, commands, env, probes, users, read-only root, volumes, init order) as rendered.
    """
    pods = []
    for name in ("triton", "bge-gateway"):
        template = copy.deepcopy(cpu.one("Deployment", name)["spec"]["template"])  # the rendered docs are shared
        spec = template["spec"]
        shm = {v["name"] for v in spec.get("volumes", []) if v.get("emptyDir", {}).get("medium") == "Memory"}
        spec["volumes"] = [v for v in spec.get("volumes", []) if v["name"] not in shm]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            container["volumeMounts"] = [m for m in container.get("volumeMounts", []) if m["name"] not in shm]
        spec["restartPolicy"] = "OnFailure"
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": template["metadata"]["labels"]},
                "spec": spec,
            }
        )
    return pods


def test_cpu_overlay_plays_under_podman_kube_play(
    podman: Podman, images: dict[str, str], cpu: Any, tmp_path: Path, minilm_dir: Path
) -> None:
    import openai

    busy = [p for p in PLAYED_PORTS if not _port_free(p)]
    assert not busy, f"ports {busy} are taken here; kube play publishes the pods' containerPorts on the host"
    job = cpu.one("Job", "bge-export")["spec"]["template"]["spec"]
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in job["volumes"] if "persistentVolumeClaim" in v)
    play_file = tmp_path / "play.yaml"
    play_file.write_text(yaml.safe_dump_all(playable(cpu)))
    podman("kube", "down", str(play_file), check=False)
    podman("volume", "rm", "-f", claim, check=False)
    podman("volume", "create", claim)
    if podman("network", "exists", PLAY_NETWORK, check=False).returncode != 0:
        podman("network", "create", PLAY_NETWORK)
    try:
        # The Job's own container (kube play runs no Jobs): its command, env and mounts, as its user.
        export = job["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in export["volumeMounts"]}
        env = [f"{e['name']}={e['value']}" for e in export["env"] if "value" in e]
        env += ["BGE_EXPORT_MODEL=/model", f"BGE_EXPORT_NAME={MODEL}", "BGE_EXPORT_INTRA_OP_THREADS=1"]
        user = f"{job['securityContext']['runAsUser']}:{job['securityContext']['runAsGroup']}"
        podman(
            "run", "--rm", f"--user={user}", "--entrypoint", export["command"][0],
            "-v", f"{claim}:{mounts['model-repository']}:U", "-v", f"{minilm_dir}:/model:ro",
            f"--tmpfs={mounts['tmp']}", f"--tmpfs={mounts['hf-cache']}",
            *[arg for pair in (("-e", e) for e in env) for arg in pair],
            images["export"],
            timeout=900,
        )  # fmt: skip

        podman.create_secret("triton-admin", {"admin-key": ADMIN_KEY})
        podman.create_secret("bge-gateway", {"api-key": API_KEY})
        podman("kube", "play", f"--network={PLAY_NETWORK}", str(play_file), timeout=600)
        wait_for(lambda: get_json("http://127.0.0.1:30000/health")[0] == 200, 300, "the played gateway's /health")
        # The init container (removed once it has run) staged the pod's own copy of the published version.
        served = podman("exec", "triton-triton", "ls", "/models").stdout.split()
        assert served == [MODEL, f"{MODEL}-encoder", f"{MODEL}-tokenizer"], served

        client = openai.OpenAI(base_url="http://127.0.0.1:30000/v1", api_key=API_KEY)
        response = client.embeddings.create(model=MODEL, input=TEXTS)
        _check_vectors(np.array([d.embedding for d in response.data]), _reference(minilm_dir))
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url="http://127.0.0.1:30000/v1", api_key="wrong").embeddings.create(
                model=MODEL, input=TEXTS[:1]
            )

        for pod in ("bge-gateway", "triton"):  # SIGTERM, then the pod's grace period
            podman("pod", "stop", "-t", "70", pod, timeout=120)
        for container in ("bge-gateway-gateway", "triton-triton"):
            assert podman.inspect(container, "{{.State.ExitCode}}") == "0", podman("logs", container).stderr[-3000:]
    finally:
        podman("kube", "down", str(play_file), check=False)
        podman("volume", "rm", "-f", claim, check=False)
        for secret in ("triton-admin", "bge-gateway"):
            podman("secret", "rm", secret, check=False)
