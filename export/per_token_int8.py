"""Per-token int8 MatMuls for CPUs without VNNI: one activation scale per row, u8 x u8 ``MatMulInteger``.

BERT's FFN down-projections (after GELU) carry per-token outliers that one activation scale per
tensor cannot hold. On VNNI CPUs they run as 8-bit MatMulNBits (an activation scale per row and
block of 32); on AVX2 that kernel is slower than fp32 (71 ms against 47 ms for bge-large's
512 x 4096 x 1024, 2 threads, BENCHMARKS.md). This rewrite gives each row (token) its own
symmetric scale and each weight column its own: ``y = (q_x - 128) @ (q_w - 128) * s_row * s_col``.
Both operands are u8, which onnxruntime computes with 16-bit multiplies that cannot saturate
(u8 x s8 on AVX2 adds product pairs into saturating int16), so the weights keep all 8 bits:
28.3 ms for the same matmul, and min cosine 0.9927 against fp32 on all-MiniLM-L6-v2 where per-row
7-bit s8 weights (20.6 ms) gave 0.9885, below the int8 gate.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import helper, numpy_helper

ZERO_POINT = 128
LEVELS = 127.0  # symmetric: q in [1, 255] around ZERO_POINT
_PREFIX = "per_token_int8"


def _quantized_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u8 weights around ZERO_POINT with one symmetric scale per output column."""
    scale = np.maximum(np.abs(weight).max(axis=0), 1e-8) / LEVELS
    q = np.clip(np.round(weight / scale), -LEVELS, LEVELS) + ZERO_POINT
    return q.astype(np.uint8), scale.astype(np.float32)


def quantize_per_token(model: onnx.ModelProto, nodes: Collection[str]) -> int:
    """Rewrite the MatMuls named in ``nodes`` (constant weight [K, N]) in place; returns how many.

    Rows are quantized once per activation tensor, however many of the MatMuls read it. The
    replaced fp32 weights are dropped from the graph.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    added: list[onnx.TensorProto] = []

    def constant(name: str, value: np.ndarray) -> str:
        added.append(numpy_helper.from_array(value, name))
        return name

    eps = constant(f"{_PREFIX}_eps", np.array(1e-8, np.float32))
    levels = constant(f"{_PREFIX}_levels", np.array(LEVELS, np.float32))
    one = constant(f"{_PREFIX}_one", np.array(1.0, np.float32))
    zero_point = constant(f"{_PREFIX}_zero_point", np.array(ZERO_POINT, np.uint8))
    rows: dict[str, tuple[str, str]] = {}  # activation -> (quantized, row scale)
    graph: list[onnx.NodeProto] = []
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.name not in nodes or node.input[1] not in initializers:
            graph.append(node)
            continue
        x = node.input[0]
        if x not in rows:
            p = f"{x}_{_PREFIX}"
            graph += [
                helper.make_node("Abs", [x], [f"{p}_abs"], name=f"{p}_abs"),
                helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_max"], name=f"{p}_max", axes=[-1], keepdims=1),
                helper.make_node("Max", [f"{p}_max", eps], [f"{p}_max_eps"], name=f"{p}_max_eps"),
                helper.make_node("Div", [f"{p}_max_eps", levels], [f"{p}_scale"], name=f"{p}_scale"),
                helper.make_node("Div", [x, f"{p}_scale"], [f"{p}_scaled"], name=f"{p}_scaled"),
                helper.make_node("QuantizeLinear", [f"{p}_scaled", one, zero_point], [f"{p}_q"], name=f"{p}_q"),
            ]
            rows[x] = (f"{p}_q", f"{p}_scale")
        quantized, row_scale = rows[x]
        weight, column_scale = _quantized_weight(numpy_helper.to_array(initializers[node.input[1]]))
        n = node.name
        columns = constant(f"{n}_column_scale", column_scale)
        graph += [
            helper.make_node(
                "MatMulInteger",
                [quantized, constant(f"{n}_weight_u8", weight), zero_point, zero_point],
                [f"{n}_int32"],
                name=f"{n}_int32",
            ),
            helper.make_node("Cast", [f"{n}_int32"], [f"{n}_float"], name=f"{n}_float", to=onnx.TensorProto.FLOAT),
            helper.make_node("Mul", [f"{n}_float", row_scale], [f"{n}_rows"], name=f"{n}_rows"),
            helper.make_node("Mul", [f"{n}_rows", columns], [node.output[0]], name=n),
        ]
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(graph)
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in [*model.graph.initializer, *added] if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return rewritten


__all__ = ["quantize_per_token"]
