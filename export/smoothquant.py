"""SmoothQuant for dynamic int8: move activation outliers into the weights before quantizing.

Dynamic quantization gives each activation tensor one int8 scale per run, so a few outlier
channels (BERT's LayerNorm outputs carry them) squeeze every other channel into a handful of
levels. For ``y = x @ W`` we rescale per input channel, ``y = (x / s) @ (s * W)``, with
``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)`` (Xiao et al., 2023): the activations get flat,
the per-channel int8 weights absorb the range. Measured on all-MiniLM-L6-v2 against PyTorch,
quantizing attention too, FFN down-projections fp32: min cosine 0.989 without smoothing, 0.995
with alpha 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Calibration text: zh and en, short to a few hundred tokens. Kept apart from the parity texts
# so that the gate checks on text the scales were not fitted to.
CALIBRATION_TEXTS: tuple[str, ...] = (
    "深度学习模型在自然语言处理中的应用越来越广泛。",
    "The quick brown fox jumps over the lazy dog.",
    "北京是中国的首都，也是一座历史悠久的城市，有故宫、天坛和长城等名胜古迹。" * 4,
    "Vector databases index embeddings for approximate nearest neighbour search. " * 8,
    "用户评论：这款手机的电池续航很好，但是屏幕在阳光下有点暗，拍照效果一般。",
    "机器翻译 machine translation 的质量评估通常使用 BLEU 和人工打分。",
    "问：如何重置账户密码？答：点击登录页面的“忘记密码”，按照邮件中的链接操作。",
    "股票市场今天大幅上涨，科技股领涨，成交量明显放大，分析师认为资金正在回流。" * 8,
    "def cosine(a, b): return a @ b / (norm(a) * norm(b))",
    "Patients with type 2 diabetes should monitor blood glucose and follow a balanced diet.",
    "合同第三条：乙方应在收到货物后七个工作日内完成验收，逾期视为验收合格。" * 3,
    "2024年第三季度营收同比增长15%，净利润为3.2亿元。",
)

QUANTIZABLE_OPS = ("MatMul", "Attention")


def _weighted_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul / fused Attention nodes whose weight (input 1) is a constant, rows = input channels."""
    weights = {init.name for init in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in QUANTIZABLE_OPS and n.input[1] in weights]


def activation_ranges(
    model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], skip: frozenset[str] = frozenset()
) -> dict[str, np.ndarray]:
    """Per-channel max |x| of the input of every weighted node not in ``skip``, over the calibration runs.

    The inputs are exposed as graph outputs only long enough to build the session; ``model`` is
    left as it came, so one loaded copy serves calibration and smoothing.
    """
    import onnxruntime as ort

    inputs = sorted({n.input[0] for n in _weighted_nodes(model) if n.name not in skip})
    kept_outputs = len(model.graph.output)
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend(
        helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in inputs if name not in existing
    )
    try:
        probe = model.SerializeToString()
    finally:
        del model.graph.output[kept_outputs:]
    session = ort.InferenceSession(probe, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        outputs = session.run(inputs, {k: v for k, v in feed.items() if k in wanted})
        for name, value in zip(inputs, outputs, strict=True):
            channel_max = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            ranges[name] = channel_max if name not in ranges else np.maximum(ranges[name], channel_max)
    return ranges


def smoothing_scales(activation_max: np.ndarray, weight: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|x_j|^alpha / max|W_j|^(1-alpha), clipped so no channel is scaled past 100x."""
    act = np.maximum(activation_max, 1e-5)
    wmax = np.maximum(np.abs(weight).max(axis=1), 1e-5)
    return np.clip(act**alpha / wmax ** (1.0 - alpha), 1e-2, 1e2).astype(np.float32)


def smooth_model(
    model: onnx.ModelProto, ranges: dict[str, np.ndarray], alpha: float, skip: frozenset[str] = frozenset()
) -> int:
    """Rescale in place: a Mul by 1/s before each weighted node, s folded into its weight rows.

    The Mul is explicit (not folded into the LayerNorm before it) because that LayerNorm's
    output is also the residual stream; it costs one elementwise pass, far below the MatMul.
    Nodes in ``skip`` (those left fp32) are not touched. Returns the number of nodes smoothed.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    smoothed = 0
    for node in model.graph.node:
        weighted = node.op_type in QUANTIZABLE_OPS and node.input[1] in initializers
        if weighted and node.input[0] in ranges and node.name not in skip:
            weight = numpy_helper.to_array(initializers[node.input[1]])
            scales = smoothing_scales(ranges[node.input[0]], weight, alpha)
            initializers[node.input[1]].CopyFrom(
                numpy_helper.from_array((weight * scales[:, None]).astype(weight.dtype), node.input[1])
            )
            inverse = f"{node.name}_smooth_inverse"
            model.graph.initializer.append(numpy_helper.from_array(1.0 / scales, inverse))
            smoothed_input = f"{node.name}_smoothed_input"
            nodes.append(
                helper.make_node("Mul", [node.input[0], inverse], [smoothed_input], name=f"{node.name}_smooth")
            )
            node.input[0] = smoothed_input
            smoothed += 1
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return smoothed


def smooth_onnx(
    source: Path, target: Path, feeds: list[dict[str, np.ndarray]], alpha: float, skip: frozenset[str] = frozenset()
) -> int:
    """Calibrate on ``feeds`` and write the smoothed (still fp32, same outputs) graph."""
    model = onnx.load(str(source))
    count = smooth_model(model, activation_ranges(model, feeds, skip), alpha, skip)
    onnx.save(model, str(target))
    return count


__all__ = ["CALIBRATION_TEXTS", "activation_ranges", "smooth_model", "smooth_onnx", "smoothing_scales"]
