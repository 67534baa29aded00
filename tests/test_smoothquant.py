"""SmoothQuant before int8: the fp32 graph computes the same thing, and int8 gets closer to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from support import export_model

from bge_export.optimize import calibration_feeds, quantize_int8
from bge_export.parity import PARITY_TEXTS, onnx_embeddings
from bge_export.smoothquant import CALIBRATION_TEXTS, activation_ranges, smooth_model, smoothing_scales
from bge_model_repository.cpu import CpuFeatures, Int8Target


def _matmul_graph(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
        "proj",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", weight.shape[1]])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_smoothing_scales_follow_the_formula_and_are_clipped() -> None:
    act = np.array([4.0, 1.0, 1e6], dtype=np.float32)
    weight = np.array([[1.0, -1.0], [0.25, 0.0], [1.0, 1.0]], dtype=np.float32)
    scales = smoothing_scales(act, weight, alpha=0.5)
    assert scales[0] == pytest.approx(2.0) and scales[1] == pytest.approx(2.0)  # sqrt(4)/1, sqrt(1)/sqrt(.25)
    assert scales[2] == pytest.approx(100.0)  # sqrt(1e6) = 1000, clipped
    assert np.allclose(smoothing_scales(act[:2], weight[:2], alpha=0.0), [1.0, 4.0])


def test_smoothed_graph_computes_the_same_and_flattens_the_outlier_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(16, 8)).astype(np.float32)
    x = rng.normal(size=(32, 16)).astype(np.float32)
    x[:, 3] *= 60.0  # one outlier channel, as BERT's LayerNorm outputs have
    model = _matmul_graph(weight)
    onnx.save(model, str(tmp_path / "m.onnx"))
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    ranges = activation_ranges(loaded, [{"x": x}])
    assert np.allclose(ranges["x"], np.abs(x).max(axis=0))
    assert [o.name for o in loaded.graph.output] == ["y"]  # the probe outputs were taken off again

    smoothed = onnx.load(str(tmp_path / "m.onnx"))
    assert smooth_model(smoothed, ranges, alpha=0.5) == 1
    assert np.allclose(_run(smoothed, x), _run(model, x), rtol=1e-4, atol=1e-3)

    # What the quantizer will see: the Mul's output, whose spread across channels is far smaller.
    smoothed.graph.output.append(helper.make_tensor_value_info("proj_smoothed_input", TensorProto.FLOAT, None))
    session = ort.InferenceSession(smoothed.SerializeToString(), providers=["CPUExecutionProvider"])
    seen = session.run(["proj_smoothed_input"], {"x": x})[0]
    spread = lambda a: np.abs(a).max(axis=0).max() / np.median(np.abs(a).max(axis=0))  # noqa: E731
    assert spread(seen) < spread(x) / 4


def test_nodes_kept_fp32_are_not_smoothed(tmp_path: Path) -> None:
    model = _matmul_graph(np.ones((4, 2), dtype=np.float32))
    assert smooth_model(model, {"x": np.ones(4, dtype=np.float32)}, 0.5, skip=frozenset({"proj"})) == 0
    assert [n.op_type for n in model.graph.node] == ["MatMul"]


def test_calibration_texts_are_not_the_parity_texts() -> None:
    """The gate must judge int8 on text its scales were not fitted to."""
    assert not set(CALIBRATION_TEXTS) & set(PARITY_TEXTS)


@pytest.fixture(scope="module")
def minilm_fp32(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("minilm-fp32")
    # SmoothQuant works on the optimized graph int8 starts from, onnxruntime's
    export_model(minilm_dir, root / "repo", root / "work", "m", parity=False, cpu_engine="onnxruntime")
    return root / "work" / "m"


def _min_cosine(candidate: Path, work: Path) -> float:
    texts = list(PARITY_TEXTS)
    reference, _ = onnx_embeddings(work / "optimized.onnx", work / "tokenizer", texts, 256)
    vectors, _ = onnx_embeddings(candidate, work / "tokenizer", texts, 256)
    return float((reference * vectors).sum(axis=1).min())


def test_smoothed_fp32_minilm_is_the_same_model(minilm_fp32: Path, tmp_path: Path) -> None:
    """Fused Attention weights are rescaled by rows like MatMul weights: the model must not change."""
    feeds = calibration_feeds(minilm_fp32 / "tokenizer", 256)
    model = onnx.load(str(minilm_fp32 / "optimized.onnx"))
    ranges = activation_ranges(model, feeds)
    assert smooth_model(model, ranges, 0.5) == 24  # 6 layers x (attention, out-proj, FFN up, FFN down)
    onnx.save(model, str(tmp_path / "smoothed.onnx"))
    assert _min_cosine(tmp_path / "smoothed.onnx", minilm_fp32) >= 0.99999


@pytest.mark.isa
def test_smoothing_is_what_lets_minilm_quantize_attention(minilm_fp32: Path, tmp_path: Path, cpu: CpuFeatures) -> None:
    """int8 vs fp32, real weights, min over the parity texts, for this CPU's scheme. Measured: VNNI (AVX-512)
    0.9953 smoothed vs 0.9865 plain; AVX2 without VNNI 0.9927 vs 0.9830."""
    feeds = calibration_feeds(minilm_fp32 / "tokenizer", 256)
    source = minilm_fp32 / "optimized.onnx"
    target = cpu.int8_target()
    kept = quantize_int8(source, tmp_path / "smooth.onnx", feeds, target, smooth_alpha=0.5)
    quantize_int8(source, tmp_path / "plain.onnx", feeds, target, smooth_alpha=None)
    assert len(kept) == 6  # the FFN down-projections, quantized at a finer grain
    ops = {n.op_type for n in onnx.load(str(tmp_path / "smooth.onnx"), load_external_data=False).graph.node}
    finer = "MatMulNBits" if target is Int8Target.VNNI else "MatMulInteger"
    assert {"QAttention", finer} <= ops, ops
    smoothed, plain = (
        _min_cosine(tmp_path / "smooth.onnx", minilm_fp32),
        _min_cosine(tmp_path / "plain.onnx", minilm_fp32),
    )
    assert smoothed >= 0.99, (smoothed, cpu.describe())
    assert smoothed > plain + 0.004, (smoothed, plain, cpu.describe())
