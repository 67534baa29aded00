"""onnxruntime's transformer optimizer, fp16 conversion and int8 dynamic quantization."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from bge_model_repository.cpu import Int8Target

# Ops whose output feeds the FFN down-projection (see after_gelu_matmuls).
GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")


@dataclass(frozen=True)
class FusionReport:
    counts: dict[str, int]
    layers: int

    @property
    def attention_fused(self) -> bool:
        return self.counts.get("Attention", 0) + self.counts.get("MultiHeadAttention", 0) >= self.layers

    def summary(self) -> str:
        found = ", ".join(f"{k} x{v}" for k, v in self.counts.items() if v) or "none"
        return f"fusions: {found}"


def optimize_bert(
    source: Path, target: Path, num_heads: int, hidden_size: int, layers: int, fp16: bool = False
) -> FusionReport:
    """Fuse attention / LayerNorm / GELU with Python-level fusions only (portable CPU <-> GPU)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    counts = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items()}
    if fp16:
        # Inputs stay int64 and the output float32: clients never see fp16.
        optimized.convert_float_to_float16(keep_io_types=True)
    optimized.save_model_to_file(str(target))
    return FusionReport(counts=counts, layers=layers)


def convert_fp16(source: Path, target: Path) -> None:
    """fp16 weights and compute for an unoptimized graph (``--no-optimize``), float32 I/O."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))


def after_gelu_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls fed by a GELU: the FFN down-projections, whose activations carry int8-hostile outliers."""
    gelu_outputs = {out for node in model.graph.node if node.op_type in GELU_OPS for out in node.output}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and node.input[0] in gelu_outputs]


def calibration_feeds(tokenizer_dir: Path, max_length: int) -> list[dict[str, np.ndarray]]:
    """One unpadded run per calibration text, so padding never enters the ranges."""
    from bge_export.smoothquant import CALIBRATION_TEXTS
    from bge_model_repository.encoder_runtime import token_batch_inputs
    from bge_model_repository.tokenization import load_tokenizer, tokenize

    tokenizer = load_tokenizer(tokenizer_dir)
    return [token_batch_inputs(tokenize(tokenizer, [text], max_length)) for text in CALIBRATION_TEXTS]


def quantize_int8(
    source: Path,
    target: Path,
    feeds: list[dict[str, np.ndarray]],
    cpu: Int8Target,
    full: bool = False,
    smooth_alpha: float | None = 0.5,
) -> list[str]:
    """Dynamic int8 for the CPU ``cpu`` (per-channel weights, per-run activations); returns the nodes
    quantized at a finer grain (the FFN down-projections).

    The down-projections' input (after GELU) has per-token outliers that smoothing cannot move and
    one scale per tensor cannot hold, so they get their own scheme, by CPU:

    - ``vnni``: 8-bit MatMulNBits with 32-wide blocks (int8 compute; each block of each token its own
      scale); the rest per tensor with full-range weights. Measured on a VNNI box: 0.9953 min cosine
      to fp32 on all-MiniLM-L6-v2, bge-large 64 tokens 9.1 texts/s against 3.4 for fp32.
    - ``avx2``: per-token u8 x u8 MatMulInteger (`per_token_int8`), since MatMulNBits is slower than
      fp32 there; the rest per tensor with 7-bit weights (``reduce_range``), which keeps AVX2's
      saturating int16 pair sums in range. Full-range weights there give 0.9235 on MiniLM; this 0.9927,
      and 2.1x PyTorch fp32 in process on bge-large at 64 tokens (BENCHMARKS.md).

    ``full`` quantizes the down-projections per tensor like the rest (faster; 0.979 on MiniLM): the
    gate decides.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bge_export.per_token_int8 import quantize_per_token
    from bge_export.smoothquant import smooth_onnx

    down = [] if full else after_gelu_matmuls(onnx.load(str(source), load_external_data=False))
    if smooth_alpha is not None:
        smoothed = target.with_name(f"{target.stem}-smoothed.onnx")
        smooth_onnx(source, smoothed, feeds, smooth_alpha, skip=frozenset(down))
        source = smoothed
    per_tensor = target.with_name(f"{target.stem}-dynamic.onnx") if down else target
    quantize_dynamic(
        str(source),
        str(per_tensor),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        per_channel=True,
        reduce_range=cpu is Int8Target.AVX2,
        nodes_to_exclude=down,
        # fused contrib ops (Attention, SkipLayerNormalization) carry no inferred output types
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    if down and cpu is Int8Target.VNNI:
        quantize_blockwise_int8(per_tensor, target, down)
    elif down:
        model = onnx.load(str(per_tensor))
        quantize_per_token(model, down)
        onnx.save(model, str(target))
    return down


def quantize_blockwise_int8(source: Path, target: Path, nodes: list[str], block_size: int = 32) -> None:
    """8-bit MatMulNBits for ``nodes``: symmetric int8 weights, activations quantized per row and block."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # It logs one INFO line per node it skips: hundreds for BERT-large.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)),
        bits=8,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4,  # int8 compute (VNNI / AVX2), not fp32 dequantize-then-multiply
        nodes_to_include=nodes,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
