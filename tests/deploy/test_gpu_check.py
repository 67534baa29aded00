"""``python -m bge_deploy.gpu.check``: its CPU dry run end to end, its refusal without a GPU, its serving decision.

The dry run is the GPU check's own code with the GPU parts swapped (python-backend export, onnxruntime in
process, the pip-installed Triton): export, ``bge-triton``, parity and load through the ensemble over gRPC.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bge_deploy.gpu.check import Row, format_table, serving_unavailable
from bge_deploy.gpu.modes import CPU_DRY_RUN, GPU
from bge_deploy.serving.install import TRITON_HOME_ENV

LENGTHS = (16, 48)


def table_rows(output: str) -> dict[int, list[str]]:
    """The throughput table's rows by token length (a row is a line of cells that starts with an integer)."""
    rows = {}
    for line in output.splitlines():
        cells = line.split()
        if line.startswith("  ") and len(cells) == 7 and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return rows


def test_cpu_dry_run_serves_the_export_and_checks_parity_and_throughput(tiny_bge_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != TRITON_HOME_ENV}  # the pip-installed Triton
    cmd = [
        sys.executable, "-m", "bge_deploy.gpu.check", "--cpu-dry-run",
        "--model-dir", str(tiny_bge_dir),
        "--lengths", ",".join(map(str, LENGTHS)),
        "--batch", "4", "--concurrency", "4", "--duration", "1", "--requests", "40", "--repeats", "2",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr[-3000:]

    assert "bge-triton: using tritonserver" in output and "ready - HTTP 127.0.0.1:" in output
    served = re.search(r"^gpu-check: served \(Triton ensemble, gRPC\) vs PyTorch fp32: min cosine (\S+),.* PASS$",
                       output, re.M)  # fmt: skip
    assert served is not None, output
    assert float(served.group(1).rstrip(",")) >= 0.999
    assert re.search(r"^gpu-check: onnxruntime-fp32 in process vs PyTorch fp32: .* PASS$", output, re.M), output

    rows = table_rows(output)
    assert sorted(rows) == list(LENGTHS), output
    for cells in rows.values():
        served_rate, p50, engine, baseline = (float(cell) for cell in cells[1:5])
        assert served_rate > 0 and p50 > 0 and engine > 0 and baseline > 0, cells
        assert cells[5].endswith("x") and cells[6].endswith("x")
    assert re.search(r"^gpu-check: PASS \(in-process parity, served parity, served load\)$", output, re.M), output


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU: the check would run")
def test_without_a_gpu_it_says_so_and_exits_2() -> None:
    result = subprocess.run([sys.executable, "-m", "bge_deploy.gpu.check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "has no NVIDIA GPU" in result.stderr and "--cpu-dry-run" in result.stderr
    assert result.stdout == ""  # nothing was exported or started


def _install(home: Path, *backends: str) -> Path:
    """A folder shaped like NVIDIA's /opt/tritonserver with the given backends."""
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "tritonserver").write_text("")
    for backend in ("python", *backends):
        (home / "backends" / backend).mkdir(parents=True)
    return home


def test_the_engine_is_served_only_by_a_triton_with_the_tensorrt_backend(tmp_path: Path) -> None:
    with_trt = _install(tmp_path / "nvidia", "tensorrt")
    without = _install(tmp_path / "python-only")
    nowhere = tmp_path / "no-opt"
    assert serving_unavailable(GPU, None, {TRITON_HOME_ENV: str(with_trt)}, nowhere) is None
    assert serving_unavailable(GPU, None, {}, system_home=with_trt) is None  # /opt/tritonserver, as in the image
    reason = serving_unavailable(GPU, without, {}, nowhere)
    assert reason is not None and "no Triton with the tensorrt backend" in reason
    reason = serving_unavailable(GPU, None, {}, nowhere)  # only the pip wheel: Python backend only
    assert reason is not None and "nvidia-pytriton wheel" in reason and "tritonserver:24.12-py3" in reason
    # The dry run's python-backend repository is served by any of them.
    assert serving_unavailable(CPU_DRY_RUN, without, {}, nowhere) is None
    assert serving_unavailable(CPU_DRY_RUN, None, {}, nowhere) is None


def test_table_without_serving_shows_dashes_and_in_process_ratios() -> None:
    rows = [Row(64, None, None, engine=300.0, baseline=100.0), Row(512, 50.0, 12.5, engine=40.0, baseline=20.0)]
    header, skipped, served = format_table(rows, "tensorrt-fp16", "pytorch-fp16")
    assert header.split() == ["tokens", "served", "p50", "ms", "tensorrt-fp16", "pytorch-fp16", "served/base",
                              "engine/base"]  # fmt: skip
    assert skipped.split() == ["64", "-", "-", "300.0", "100.0", "-", "3.00x"]
    assert served.split() == ["512", "50.0", "12.5", "40.0", "20.0", "2.50x", "2.00x"]
