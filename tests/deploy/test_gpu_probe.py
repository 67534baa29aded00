"""``python -m bge_deploy.gpu.probe``: its CPU path (export parity, fp32 parity) and its refusal without a GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bge_deploy.gpu.probe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_cpu_path_exports_the_tensorrt_input_and_checks_parity(tiny_bge_dir: Path) -> None:
    result = probe("--model-dir", str(tiny_bge_dir), "--device", "cpu")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = dict(re.findall(r"^gpu-probe: (.+?): min cosine (\S+) \(>= 0\.99999\) PASS$", result.stdout, re.M))
    assert set(lines) == {
        "plain ONNX export on onnxruntime CPU vs PyTorch fp32 CPU",
        "PyTorch fp32 (SDPA) on cpu vs fp32 CPU",
    }, result.stdout
    assert all(float(cosine) >= 0.99999 for cosine in lines.values())
    assert re.search(r"^gpu-probe: onnxruntime \S+, providers .*CPUExecutionProvider", result.stdout, re.M)


def test_refuses_cuda_without_a_gpu(tiny_bge_dir: Path) -> None:
    """No visible GPU (hidden from the probe on a GPU box too): a clear refusal, not a crash."""
    result = probe("--model-dir", str(tiny_bge_dir), env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert "sees no GPU here; --device cpu runs steps 1-2" in result.stderr
