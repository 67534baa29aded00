"""The per-token u8 x u8 MatMul rewrite (int8 for CPUs without VNNI)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bge_export.per_token_int8 import quantize_per_token

K, N = 64, 32


def _two_projections(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """Two MatMuls reading the same activation, as Q/K/V would; x is [batch, tokens, K]."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["y1"], name="first"),
            helper.make_node("MatMul", ["x", "w2"], ["y2"], name="second"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", K])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "t", N]) for n in ("y1", "y2")],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_rewrite_computes_the_matmuls_with_per_token_scales() -> None:
    rng = np.random.default_rng(0)
    w1, w2 = (rng.normal(size=(K, N)).astype(np.float32) for _ in range(2))
    x = rng.normal(size=(2, 5, K)).astype(np.float32)
    x[0, 3] *= 500.0  # one outlier token: per-tensor scales would flatten every other token
    model = _two_projections(w1, w2)
    assert quantize_per_token(model, {"first", "second"}) == 2
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("MatMulInteger") == 2 and "MatMul" not in ops
    assert ops.count("QuantizeLinear") == 1, "one activation, quantized once for both projections"
    assert {init.name for init in model.graph.initializer}.isdisjoint({"w1", "w2"}), "fp32 weights are dropped"
    for got, weight in zip(_run(model, x), (w1, w2), strict=True):
        want = x @ weight
        error = np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)
        assert error.max() < 0.02, error  # every token, the small ones beside the outlier included


def test_only_the_named_matmuls_change() -> None:
    rng = np.random.default_rng(1)
    model = _two_projections(*(rng.normal(size=(K, N)).astype(np.float32) for _ in range(2)))
    assert quantize_per_token(model, {"second"}) == 1
    assert [n.op_type for n in model.graph.node].count("MatMul") == 1
