"""The overlays' own containers, run here: the export Job's, the Triton pod's init containers, Triton's.

Each container's command, args and env come from ``kubectl kustomize`` output; only what a node
would provide is supplied by the test: a host folder for each volume (its mount paths rewritten to
that folder), the Secret's value, free ports instead of 8000-8002, and a local model instead of the
hub id (no internet here). What runs is the project's installed console scripts, not the images
(the podman tests build and run those).

CPU overlay: Job -> publish -> stage -> bge-triton serves the staged copy and answers; a re-export
while it serves changes nothing under it. GPU overlay, on a machine without a GPU: the Job (CPU
only, by design) publishes the ONNX, the pod stages it, and the plan-building init container stops
with one clear line, so Triton never starts on a repository it cannot load.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bge_deploy.serving.launched import READY_LINE
from bge_deploy.serving.process import ManagedProcess, free_port
from bge_model_repository import published

MODEL = "bge-large-zh-v1.5"
ADMIN_KEY = "test-admin-key"
Manifest = dict[str, Any]


@dataclass
class Node:
    """What a kubelet gives a pod here: a host folder per volume, and an empty working directory."""

    root: Path
    volumes: dict[str, Path] = field(default_factory=dict)

    def folder(self, volume: str) -> Path:
        if volume not in self.volumes:
            self.volumes[volume] = self.root / "volumes" / volume
            self.volumes[volume].mkdir(parents=True)
        return self.volumes[volume]

    def command(
        self, pod: Manifest, container: Manifest, env: dict[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The container's argv and environment with its mount paths pointing at this node's folders."""
        claims = {v["name"]: v for v in pod["volumes"]}
        mounts = sorted(
            (
                (m["mountPath"], self.folder(m["name"]) / m.get("subPath", ""))
                for m in container.get("volumeMounts", [])
            ),
            key=lambda pair: -len(pair[0]),
        )
        assert all(name in claims for name in (m["name"] for m in container.get("volumeMounts", [])))

        def local(value: str) -> str:
            head, eq, tail = value.partition("=")
            text = tail if eq and head.startswith("--") else value
            for mount_path, host in mounts:
                if text == mount_path or text.startswith(mount_path + "/"):
                    text = str(host) + text[len(mount_path) :]
                    break
            return f"{head}={text}" if eq and head.startswith("--") else text

        argv = [local(a) for a in [*container.get("command", []), *container.get("args", [])]]
        values = {e["name"]: local(e["value"]) for e in container.get("env", []) if "value" in e}
        return argv, {"PATH": os.environ["PATH"], **values, **(env or {})}

    def run(self, pod: Manifest, container: Manifest, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        argv, environment = self.command(pod, container, env)
        workdir = self.root / f"cwd-{container['name']}"
        workdir.mkdir(exist_ok=True)
        proc = subprocess.run(argv, cwd=workdir, env=environment, capture_output=True, text=True, timeout=900)
        # Containers write only into their volumes (the images' own folders are not writable by uid 1000).
        assert list(workdir.iterdir()) == [], f"{container['name']} wrote into its working directory"
        return proc


def _init(pod: Manifest, name: str) -> Manifest:
    return next(c for c in pod["initContainers"] if c["name"] == name)


def _job(rendered: Any) -> tuple[Manifest, Manifest]:
    pod = rendered.one("Job", "bge-export")["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def _publish(rendered: Any, node: Node, minilm_dir: Path) -> published.Version:
    """The export Job's container on this node, with the local model (and its served name) for the hub id."""
    pod, export = _job(rendered)
    proc = node.run(pod, export, {"BGE_EXPORT_MODEL": str(minilm_dir), "BGE_EXPORT_NAME": MODEL})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "published version" in proc.stderr
    return published.current(node.folder("model-repository") / "published")


def _free_ports(argv: list[str]) -> tuple[list[str], int]:
    """The pod's ports are its own; here they must not collide with anything else on the machine."""
    ports = {flag: free_port() for flag in ("--http-port", "--grpc-port", "--metrics-port")}
    out = [f"{a.partition('=')[0]}={ports[a.partition('=')[0]]}" if a.partition("=")[0] in ports else a for a in argv]
    return out, ports["--http-port"]


def test_cpu_overlay_job_stage_and_triton_serve_here(cpu: Any, tmp_path: Path, minilm_dir: Path) -> None:
    node = Node(tmp_path)
    first = _publish(cpu, node, minilm_dir)
    stage = node.run(cpu.triton_pod, _init(cpu.triton_pod, "stage-model-repository"))
    assert stage.returncode == 0, stage.stderr
    assert f"staged version {first.name}" in stage.stderr
    served = node.folder("models")
    assert (served / MODEL / "config.pbtxt").is_file()

    argv, env = node.command(cpu.triton_pod, cpu.triton, {"BGE_TRITON_ADMIN_KEY": ADMIN_KEY})
    argv, http_port = _free_ports(argv)
    with ManagedProcess("triton", argv, env=env, capture=True) as triton:
        triton.wait_line(READY_LINE, timeout_s=180)
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        text = httpclient.InferInput("text", [2, 1], "BYTES")
        text.set_data_from_numpy(np.array([["你好，世界"], ["部署测试"]], dtype=object))
        vectors = client.infer(MODEL, [text]).as_numpy("embedding")
        assert vectors.shape == (2, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)

        # Re-export while it serves: a new version is published, this pod's files are untouched.
        before = {p: p.stat().st_mtime_ns for p in served.rglob("*") if p.is_file()}
        second = _publish(cpu, node, minilm_dir)
        assert second.name != first.name and published.current(second.path.parents[1]) == second
        assert {p: p.stat().st_mtime_ns for p in served.rglob("*") if p.is_file()} == before
        again = client.infer(MODEL, [text]).as_numpy("embedding")
        np.testing.assert_allclose(again, vectors, atol=1e-6)
        client.close()  # Triton's drain waits for open HTTP connections up to --exit-timeout
        triton.terminate()
        assert triton.wait(timeout_s=60) == 0, triton.log_tail()


def test_gpu_overlay_on_a_machine_without_gpu_stops_before_triton(gpu: Any, tmp_path: Path, minilm_dir: Path) -> None:
    from bge_export.tensorrt_engine import missing_gpu

    if missing_gpu() is None:
        pytest.skip("this machine can build TensorRT plans: the GPU check (python -m bge_deploy.gpu) runs this path")
    node = Node(tmp_path)
    version = _publish(gpu, node, minilm_dir)  # the Job needs no GPU: it exports ONNX on CPU
    encoder = version.path / f"{MODEL}-encoder"
    assert (encoder / "1" / "model.onnx").is_file()
    assert 'platform: "tensorrt_plan"' in (encoder / "config.pbtxt").read_text()

    stage = node.run(gpu.triton_pod, _init(gpu.triton_pod, "stage-model-repository"))
    assert stage.returncode == 0, stage.stderr
    build = node.run(gpu.triton_pod, _init(gpu.triton_pod, "build-tensorrt-plan"))
    assert build.returncode != 0
    errors = [line for line in build.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "no NVIDIA GPU" in errors[0], build.stderr
    # An init container that fails keeps the pod's main container from starting: no Triton on a
    # repository whose encoder has no plan, and the published version is untouched.
    assert not (node.folder("models") / f"{MODEL}-encoder" / "1" / "model.plan").exists()
    assert published.current(node.folder("model-repository") / "published") == version
