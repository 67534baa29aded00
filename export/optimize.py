"""onnxruntime's transformer optimizer, fp16 conversion and int8 dynamic quantization."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("bge_export")

# Fusions that matter for BERT speed; the report names each one found or missing.
KEY_FUSIONS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu")


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
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the MatMuls (and fused Attention): weights int8, activations per run."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        per_channel=False,
    )
