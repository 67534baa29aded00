"""The parity self-check where the model is served: stored references re-embedded when the encoder loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from support import export_model, loopback_server_options

from bge_deploy.serving.install import LauncherError
from bge_deploy.serving.triton import TritonServer
from bge_export.triton_config import parse
from bge_model_repository.cpu import CpuFeatures, Int8Target
from bge_model_repository.parameters import SelfCheckParameters
from bge_model_repository.self_check import SELF_CHECK_FILE, References, run_self_check

NAME = "bge-checked"
AVX2_BOX = CpuFeatures(machine="x86_64", flags=frozenset({"avx2", "fma"}))
VNNI_BOX = CpuFeatures(machine="x86_64", flags=frozenset({"avx2", "avx512f", "avx512_vnni"}))


@pytest.fixture(scope="module")
def checked_repository(tmp_path_factory: pytest.TempPathFactory, tiny_bge_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("self-check")
    export_model(tiny_bge_dir, root / "repo", root / "work", NAME, instances=1, intra_op_threads=1)
    return root / "repo"


def _references(repository: Path) -> Path:
    return repository / f"{NAME}-encoder" / "1" / SELF_CHECK_FILE


def test_export_stores_references_and_the_gate_threshold(checked_repository: Path) -> None:
    references = References.load(_references(checked_repository))
    assert references.vectors.shape == (6, 64) and set(references.inputs) >= {"input_ids", "attention_mask"}
    assert references.lengths.min() == 3 and references.lengths.max() > 100
    np.testing.assert_allclose(np.linalg.norm(references.vectors, axis=1), 1.0, rtol=1e-5)
    config = (checked_repository / f"{NAME}-encoder" / "config.pbtxt").read_text()
    assert 'key: "self_check_min_cosine"' in config and 'string_value: "0.99999"' in config


def _serve(repository: Path, workdir: Path) -> str:
    """Start a real tritonserver on ``repository``; the log once every model is ready (raises if not)."""
    with TritonServer(loopback_server_options(repository), workdir=workdir) as server:
        server.wait_ready(timeout_s=120)
        return server.log_path.read_text()


def test_intact_references_load_and_say_so(checked_repository: Path, tmp_path: Path) -> None:
    log = _serve(checked_repository, tmp_path)
    line = next(line for line in log.splitlines() if "self-check passed" in line)
    assert f"'{NAME}-encoder'" in line and "threshold 0.99999 (fp32)" in line
    assert CpuFeatures.read().describe() in line


def test_altered_references_keep_the_model_from_becoming_ready(checked_repository: Path, tmp_path: Path) -> None:
    altered = tmp_path / "repo"
    shutil.copytree(checked_repository, altered)
    references = References.load(_references(altered))
    rng = np.random.default_rng(0)
    noisy = references.vectors + rng.normal(scale=0.05, size=references.vectors.shape).astype(np.float32)
    References(references.inputs, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).save(_references(altered))
    with pytest.raises(LauncherError) as failure:
        _serve(altered, tmp_path / "work")
    text = str(failure.value)
    assert f"self-check FAILED for '{NAME}-encoder', refusing to serve: min cosine 0.9" in text, text
    assert "threshold 0.99999 (fp32)" in text and CpuFeatures.read().describe() in text


def test_vnni_int8_on_an_avx2_cpu_names_the_fix() -> None:
    """The cross-CPU case the check exists for: the line says what to re-export with."""
    references = References(
        inputs={"input_ids": np.ones((2, 3), np.int64), "attention_mask": np.ones((2, 3), np.int64)},
        vectors=np.eye(2, 4, dtype=np.float32),
    )
    parameters = {"self_check_file": SELF_CHECK_FILE, "self_check_min_cosine": "0.99", "precision": "int8"}
    spec = SelfCheckParameters.from_config({**parameters, "int8_target": "vnni"})
    assert spec.int8_target == Int8Target.VNNI.value
    skewed = np.array([[3, 1, 0, 0], [0, 1, 0, 0]], dtype=np.float32)  # cosine 3 / sqrt(10) to [1, 0, 0, 0]
    result = run_self_check(lambda inputs, lengths: skewed, references, spec, "m-encoder", cpu=AVX2_BOX)
    assert not result.passed and result.min_cosine == pytest.approx(0.948683, abs=1e-6)
    assert "--int8-target avx2" in result.line() and "x86_64: avx2, no avx512, no vnni" in result.line()
    on_vnni = run_self_check(lambda inputs, lengths: skewed, references, spec, "m-encoder", cpu=VNNI_BOX)
    assert "--int8-target" not in on_vnni.line()


def test_no_references_means_no_check() -> None:
    assert SelfCheckParameters.from_config({"precision": "fp32"}).self_check_file is None


def test_the_launchers_served_check_runs_the_references_through_triton(triton) -> None:
    """What bge-triton does for the native GPU platforms, run here against the served CPU encoder over HTTP."""
    from bge_deploy.serving.self_check import check_native_encoders, served_self_check

    encoder = f"{triton.model_name}-encoder"
    config = parse((triton.repository / encoder / "config.pbtxt").read_text())
    spec = SelfCheckParameters.from_config({key: value.string_value for key, value in config.parameters.items()})
    assert spec.self_check_file is not None
    references = References.load(triton.repository / encoder / "1" / spec.self_check_file)
    assert served_self_check(triton.http_url, encoder, references, spec).passed
    flipped = References(references.inputs, -references.vectors)
    failed = served_self_check(triton.http_url, encoder, flipped, spec)
    assert not failed.passed and failed.min_cosine == pytest.approx(-1.0, abs=1e-4)
    # Python-backend encoders check themselves as they load: the launcher leaves them alone.
    assert check_native_encoders(triton.http_url, triton.repository, [encoder]) == []
