"""What the GPU check and its CPU dry run do differently; every other step is the same code."""

from __future__ import annotations

from dataclasses import dataclass

from bge_export.settings import PARITY_THRESHOLDS, Backend, Precision
from bge_model_repository.contract import DEFAULT_MODEL

PARITY_MIN_COSINE = PARITY_THRESHOLDS[Precision.FP16]
"""Served and in-process vectors against PyTorch fp32: the fp16 export gate (0.999)."""
MODEL_NAME = DEFAULT_MODEL
"""The ensemble's name, as deployed."""


@dataclass(frozen=True)
class Mode:
    """What the GPU check and its CPU dry run do differently; every other step is the same code."""

    name: str
    backend: Backend
    device: str
    engine_label: str
    baseline_label: str
    needs_tensorrt_backend: bool
    lengths: tuple[int, ...]
    batch: int
    concurrency: int
    max_batch_size: int
    duration_s: float
    repeats: int
    intra_op_threads: int
    random_shape: tuple[tuple[str, int], ...] = ()
    """Overrides of --config's shape for the random model made without --model-dir."""


GPU = Mode(
    name="gpu",
    backend=Backend.TENSORRT,
    device="cuda",
    engine_label="tensorrt-fp16",
    baseline_label="pytorch-fp16",
    needs_tensorrt_backend=True,
    lengths=(64, 128, 512),
    batch=32,
    concurrency=32,
    max_batch_size=64,
    duration_s=10.0,
    repeats=20,
    intra_op_threads=0,
)
CPU_DRY_RUN = Mode(
    name="cpu-dry-run",
    backend=Backend.PYTHON,
    device="cpu",
    engine_label="onnxruntime-fp32",
    baseline_label="pytorch-fp32",
    needs_tensorrt_backend=False,
    lengths=(16, 64),
    batch=4,
    concurrency=4,
    max_batch_size=8,
    duration_s=2.0,
    repeats=3,
    intra_op_threads=1,
    random_shape=(
        ("num_hidden_layers", 2),
        ("hidden_size", 64),
        ("num_attention_heads", 4),
        ("intermediate_size", 128),
    ),
)
