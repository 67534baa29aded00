"""Every export knob in one typed place; CLI flags and ``BGE_EXPORT_*`` variables map onto it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bge_model_repository.contract import DEFAULT_REPOSITORY, DEFAULT_SOURCE, QUERY_INSTRUCTION, served_name
from bge_model_repository.cpu import CpuFeatures, Int8Target
from bge_model_repository.encoder_runtime import CpuEngine


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Backend(str, Enum):
    """How Triton runs the encoder."""

    PYTHON = "python"  # onnxruntime inside Triton's Python backend (pip-installed Triton, CPU)
    ONNXRUNTIME = "onnxruntime"  # native onnxruntime_onnx platform + TensorRT FP16 accelerator (GPU)
    TENSORRT = "tensorrt"  # native tensorrt_plan engine, built on a GPU


# Minimum cosine between ONNX and the PyTorch reference, per precision (issue #2).
PARITY_THRESHOLDS = {Precision.FP32: 0.99999, Precision.FP16: 0.999, Precision.INT8: 0.99}


class ExportSettings(BaseSettings):
    """bge-export: Hugging Face sentence-embedding model -> ONNX -> Triton model repository."""

    model_config = SettingsConfigDict(
        env_prefix="BGE_EXPORT_",
        cli_kebab_case=True,
        cli_prog_name="bge-export",
        cli_implicit_flags=True,
        protected_namespaces=(),
    )

    model: str = Field(DEFAULT_SOURCE, description="Hugging Face model id or local model directory")
    output: Path = Field(DEFAULT_REPOSITORY, description="Triton model repository to write")
    publish_root: Path | None = Field(
        None,
        description="publish as a new version under this folder (versions/<n>-<UTC time>/, then CURRENT switched by "
        "one rename; the previous version kept) instead of writing --output in place: what a shared volume that "
        "live pods copy from (bge-stage) needs",
    )
    name: str | None = Field(None, description="served model name (default: last part of --model)")
    precision: Precision = Field(
        Precision.FP32, description="encoder weights: fp32 (CPU default), fp16 (GPU), int8 (CPU)"
    )
    backend: Backend = Field(
        Backend.PYTHON, description="python: pip Triton/CPU; onnxruntime or tensorrt: NVIDIA container/GPU"
    )
    cpu_engine: CpuEngine | None = Field(
        None,
        description="python backend engine (default onnxruntime: every precision, one copy of the weights; "
        "openvino: fp32 only, some 10-20 percent faster on AVX-512 CPUs for about twice the memory, BENCHMARKS.md)",
    )
    int8_full: bool = Field(
        False, description="int8: FFN down-projections per tensor too, not in blocks (faster; may fail the gate)"
    )
    int8_target: Int8Target | None = Field(
        None,
        description="int8: the CPU it will serve on: vnni (AVX-512 VNNI / AVX-VNNI: full-range weights) or avx2 "
        "(no VNNI: 7-bit weights, per-token FFN down-projections, no saturation); default: this machine's CPU. "
        "The encoder re-checks its vectors on the serving CPU when it loads",
    )
    int8_smooth_alpha: float | None = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="int8: SmoothQuant migration strength, outliers moved from activations to weights (null = off)",
    )
    optimize: bool = Field(
        True, description="onnxruntime engine: run its BERT graph optimizer (fused attention, GELU, LayerNorm)"
    )
    cls_last_layer_only: bool = Field(
        True,
        description="CLS-pooled models: compute the last layer for the [CLS] row alone, the only row pooling "
        "reads (about 3.5 percent less work for bge-large; same vectors)",
    )
    opset: int = Field(17, description="ONNX opset")
    max_batch_size: int = Field(64, ge=1, description="texts per Triton batch (ensemble, tokenizer, encoder)")
    max_batch_tokens: int = Field(8192, ge=512, description="token budget of one encoder run (CPU encoder)")
    queue_delay_us: int = Field(2000, ge=0, description="encoder dynamic batcher: max wait to fill a batch")
    max_queue_size: int = Field(
        256, ge=0, description="encoder queue bound; beyond it requests are rejected (0 = unbounded)"
    )
    instances: int | None = Field(
        None,
        ge=1,
        description="encoder instances (default on CPU: 1, which runs --lanes sub-batches at once on one copy of "
        "the weights and overlaps Triton's batches; 2 per GPU)",
    )
    tokenizer_instances: int = Field(1, ge=1, description="tokenizer model instances")
    lanes: int = Field(
        0,
        ge=0,
        description="CPU encoder: sub-batches one instance runs at once (0: chosen from the serving machine's "
        "cores, up to 4: 2 cores run 2 lanes of 1 thread)",
    )
    intra_op_threads: int = Field(
        0, ge=0, description="CPU encoder threads per lane (0: the serving machine's cores / instances / lanes)"
    )
    intra_op_spinning: bool = Field(
        False,
        description="let idle onnxruntime threads busy-wait: a little less latency on a dedicated box, but they "
        "burn the CPU that the tokenizer, Triton and the gateway need when they share it",
    )
    pad_to_multiple_of: int = Field(
        8, ge=1, description="pad lengths to a multiple (GPU: 32-64 lets the batcher merge more)"
    )
    max_length: int | None = Field(
        None, description="token limit incl. [CLS]/[SEP] (default: the model's, 512 for BGE)"
    )
    query_instruction: str = Field(
        QUERY_INSTRUCTION,
        description="prepended to queries (input_type=query) by the gateway; BGE zh's retrieval instruction by "
        "default, '' for a model that has none",
    )
    parity: bool = Field(True, description="check ONNX against the PyTorch reference and fail below the threshold")
    min_cosine: float | None = Field(None, description="override the parity threshold (lowering it is reported loudly)")
    build_engine: bool = Field(
        True,
        description="tensorrt backend: build the TensorRT plan here, on this machine's GPU, so the repository "
        "is servable (fails at once without a GPU); --no-build-engine writes the ONNX only, for bge-build-engine "
        "on the serving GPU (the GPU overlay's Triton pods do that)",
    )
    trt_cache_dir: str = Field("/models/trt_cache", description="TensorRT engine cache inside the Triton container")
    workdir: Path = Field(Path("build/export"), description="scratch folder for intermediate ONNX files")

    def served_name(self) -> str:
        return served_name(self.model, self.name)

    def builds_plan(self) -> bool:
        """This export builds the TensorRT plan itself (so it needs this machine's GPU)."""
        return self.backend is Backend.TENSORRT and self.build_engine

    def encoder_instances(self) -> int:
        """The flag, else 2 per GPU and 1 on CPU, whose lanes share one copy of the weights.

        Measured on 2 cores (BENCHMARKS.md): bge-large keeps within the peer's memory only as one instance,
        whose lanes serve its batches 1.7x faster than two instances do; bge-small in one instance (lanes
        overlapping Triton's batches) serves within 4% of two instances (faster on batches, steadier p99)
        at half the memory."""
        if self.instances is not None:
            return self.instances
        return 2 if self.backend is not Backend.PYTHON else 1

    def engine(self) -> CpuEngine:
        """The engine that will run the encoder: the flag, else onnxruntime (one copy of the weights; OpenVINO,
        fp32 only, holds about twice as much for some 10-20 percent more fp32 speed, BENCHMARKS.md)."""
        if self.cpu_engine is not None:
            return self.cpu_engine
        return CpuEngine.ONNXRUNTIME

    def int8_cpu(self, cpu: CpuFeatures | None = None) -> Int8Target:
        """The CPU the int8 export is made for: the flag, else the one exporting (``cpu``: for tests)."""
        if self.int8_target is not None:
            return self.int8_target
        return (cpu or CpuFeatures.read()).int8_target()

    def parity_threshold(self) -> float:
        return self.min_cosine if self.min_cosine is not None else PARITY_THRESHOLDS[self.precision]
