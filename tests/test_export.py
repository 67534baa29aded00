"""The exporter: pooling detection, graph fusions, precisions, the parity gate and its CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from support import MINILM_NAME, export_model, require_bge_assets

from bge_export.source import Pooling, read_source
from bge_model_repository.cpu import CpuFeatures, Int8Target


def test_pooling_is_read_from_sentence_transformers_files(minilm_dir: Path) -> None:
    bge = read_source(str(require_bge_assets()))
    assert (bge.pooling, bge.max_length, bge.has_sentence_transformers) == (Pooling.CLS, 512, True)
    minilm = read_source(str(minilm_dir))
    assert (minilm.pooling, minilm.max_length) == (Pooling.MEAN, 256)


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_source(str(tmp_path / "nope"))


def test_fp32_exports_pass_the_gate(triton) -> None:
    """The exports the server runs (fp32, default engine onnxruntime): cosine >= 0.99999 against PyTorch."""
    assert triton.bge is not None, "the tiny bge model needs ../shared"
    assert triton.bge.parity_min_cosine >= 0.99999
    assert triton.minilm.parity_min_cosine >= 0.99999


@pytest.mark.parametrize(("cls_last_layer_only", "fused"), [(True, 1), (False, 2)])
def test_onnxruntime_engine_fuses_every_whole_layer(
    tmp_path: Path, tiny_bge_dir: Path, cls_last_layer_only: bool, fused: int
) -> None:
    """bge pools [CLS]: by default its last layer runs on that row alone, which the fused Attention op does not take."""
    exported = export_model(
        tiny_bge_dir,
        tmp_path / "repo",
        tmp_path / "w",
        "bge-tiny",
        cpu_engine="onnxruntime",
        cls_last_layer_only=cls_last_layer_only,
    )
    assert exported.fusions["Attention"] == fused and exported.fusions["EmbedLayerNormalization"] == 1
    assert exported.parity_min_cosine is not None and exported.parity_min_cosine >= 0.99999


@pytest.mark.parametrize(
    ("overrides", "engine"),
    [
        ({}, "onnxruntime"),
        ({"cpu_engine": "openvino"}, "openvino"),
        ({"precision": "int8"}, "onnxruntime"),
        ({"precision": "fp16"}, "onnxruntime"),
        ({"backend": "onnxruntime"}, "onnxruntime"),
    ],
)
def test_default_engine_is_onnxruntime_and_openvino_is_chosen(overrides: dict[str, str], engine: str) -> None:
    from bge_export.settings import ExportSettings

    assert ExportSettings(**overrides).engine().value == engine


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def _int8_export(tmp_path: Path, minilm_dir: Path, **overrides: object):
    from bge_export.pipeline import run_export
    from bge_export.settings import ExportSettings

    settings = ExportSettings(
        model=str(minilm_dir), output=tmp_path / "repo", workdir=tmp_path / "w", name=MINILM_NAME, precision="int8"
    )
    return run_export(settings.model_copy(update=overrides))


@pytest.mark.isa
def test_int8_for_this_cpu_passes_the_int8_gate(tmp_path: Path, minilm_dir: Path, cpu: CpuFeatures) -> None:
    """Real MiniLM weights, int8 made for the CPU it runs on (the default): >= 0.99 against fp32, VNNI or not."""
    result = _int8_export(tmp_path, minilm_dir)
    assert result.parity is not None and result.parity.min_cosine >= 0.99, cpu.describe()
    target = cpu.int8_target()
    assert result.spec.int8_target is target
    ops = _ops(tmp_path / "repo" / f"{MINILM_NAME}-encoder" / "1" / "model.onnx")
    assert {"DynamicQuantizeMatMul", "MatMulInteger"} & ops, ops
    assert "QAttention" in ops, "attention is quantized (after SmoothQuant) by default"
    if target is Int8Target.VNNI:
        assert "MatMulNBits" in ops, "VNNI: FFN down-projections are int8 in blocks"
    else:
        assert "MatMulNBits" not in ops and "MatMulInteger" in ops, "AVX2: FFN down-projections per token, u8 x u8"
    config = (tmp_path / "repo" / f"{MINILM_NAME}-encoder" / "config.pbtxt").read_text()
    assert f'string_value: "{target.value}"' in config


@pytest.mark.isa
def test_the_other_cpus_int8_on_this_one(tmp_path: Path, minilm_dir: Path, cpu: CpuFeatures) -> None:
    """Without VNNI, full-range int8 saturates and the gate refuses it; with VNNI the AVX2 scheme still passes."""
    from bge_export.pipeline import ParityError

    if cpu.x86 and not cpu.vnni:
        with pytest.raises(ParityError, match=r"min cosine 0\.9[0-8]"):
            _int8_export(tmp_path, minilm_dir, int8_target=Int8Target.VNNI)
        assert not (tmp_path / "repo" / MINILM_NAME).exists()
    else:
        result = _int8_export(tmp_path, minilm_dir, int8_target=Int8Target.AVX2)
        assert result.parity is not None and result.parity.min_cosine >= 0.99, cpu.describe()


def test_fp16_export_keeps_float32_io(tmp_path: Path, tiny_bge_dir: Path) -> None:
    from bge_export.pipeline import run_export
    from bge_export.settings import ExportSettings

    result = run_export(
        ExportSettings(
            model=str(tiny_bge_dir), output=tmp_path / "repo", workdir=tmp_path / "w", name="tiny16", precision="fp16"
        )
    )
    # On CPU the fp16 graph may not run at all; then the gate says so instead of passing silently.
    assert result.parity is None or result.parity.min_cosine >= 0.999
    model = onnx.load(str(tmp_path / "repo" / "tiny16-encoder" / "1" / "model.onnx"))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bge_export", *args], capture_output=True, text=True, timeout=300)


def test_cli_gate_fails_loudly_and_lowering_it_is_reported(tmp_path: Path, tiny_bge_dir: Path) -> None:
    common = ["--model", str(tiny_bge_dir), "--output", str(tmp_path / "repo"), "--workdir", str(tmp_path / "w")]
    failed = _cli(*common, "--min-cosine", "1.5")
    assert failed.returncode == 3, failed.stderr
    assert "FAILED the parity gate" in failed.stderr and "threshold 1.5" in failed.stderr
    assert not (tmp_path / "repo" / "bge-tiny").exists()  # nothing half-written
    lowered = _cli(*common, "--min-cosine", "0.5")
    assert lowered.returncode == 0, lowered.stderr
    assert "PARITY THRESHOLD LOWERED" in lowered.stderr
    assert "fp32 parity: min cosine" in lowered.stderr and "onnxruntime optimizer" in lowered.stderr


def test_cli_reports_a_missing_model(tmp_path: Path) -> None:
    result = _cli("--model", str(tmp_path / "absent"), "--output", str(tmp_path / "repo"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_tensorrt_export_without_a_gpu_fails_at_once_and_writes_nothing(tmp_path: Path, minilm_dir: Path) -> None:
    """The plan Triton serves is built by the export: with no GPU here, one line says so, before any work."""
    from bge_export.tensorrt_engine import missing_gpu

    if missing_gpu() is None:
        pytest.skip("this machine can build TensorRT plans; the GPU check (python -m bge_deploy.gpu) covers it")
    repo, published = tmp_path / "repo", tmp_path / "published"
    for target in (["--output", str(repo)], ["--publish-root", str(published)]):
        started = time.monotonic()
        result = _cli("--model", str(minilm_dir), *target, "--workdir", str(tmp_path / "w"), "--backend", "tensorrt")
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1, result.stderr
        assert "no NVIDIA GPU" in errors[0] and "--no-build-engine" in errors[0], errors[0]
        assert time.monotonic() - started < 60
    assert not repo.exists() and not published.exists() and not (tmp_path / "w").exists()


def test_tensorrt_export_without_plan_says_it_is_not_servable_yet(tmp_path: Path, minilm_dir: Path) -> None:
    """--no-build-engine: the ONNX and a tensorrt_plan config, and a warning naming the step still to run."""
    result = _cli(
        "--model",
        str(minilm_dir),
        "--publish-root",
        str(tmp_path / "published"),
        "--workdir",
        str(tmp_path / "w"),
        "--backend",
        "tensorrt",
        "--no-build-engine",
        "--no-parity",
        "--name",
        MINILM_NAME,
    )
    assert result.returncode == 0, result.stderr
    assert "NOT SERVABLE YET" in result.stderr and "bge-build-engine" in result.stderr
    version = (tmp_path / "published" / "CURRENT").read_text().strip()
    encoder = tmp_path / "published" / "versions" / version / f"{MINILM_NAME}-encoder"
    assert (encoder / "1" / "model.onnx").is_file() and not (encoder / "1" / "model.plan").exists()
    assert 'platform: "tensorrt_plan"' in (encoder / "config.pbtxt").read_text()


def test_full_int8_is_caught_by_the_gate_on_minilm(tmp_path: Path, minilm_dir: Path) -> None:
    """Quantizing the FFN down-projections too costs MiniLM ~0.02 cosine even smoothed: the gate must refuse."""
    from bge_export.pipeline import ParityError, run_export
    from bge_export.settings import ExportSettings

    settings = ExportSettings(
        model=str(minilm_dir),
        output=tmp_path / "repo",
        workdir=tmp_path / "w",
        name=MINILM_NAME,
        precision="int8",
        int8_full=True,
    )
    with pytest.raises(ParityError, match=r"min cosine 0\.9[0-8]"):
        run_export(settings)
    assert not (tmp_path / "repo" / MINILM_NAME).exists()
