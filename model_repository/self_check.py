"""The parity gate again, where the model is served: stored references, re-embedded on this CPU at load.

The export's gate runs on the exporting machine. int8 (and, more rarely, an fp32 engine) can compute
different vectors on another CPU: a repository made on a VNNI box gives 0.92 cosine on an AVX2 one.
So the export stores a few tokenized parity texts and their fp32 reference vectors beside the encoder
(``self_check.npz``), and the encoder embeds them when it loads, with the engine it will serve with.
Below the gate's threshold it refuses to load, so the model never turns ready, and says so in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bge_model_repository.cpu import CpuFeatures, Int8Target
from bge_model_repository.parameters import SelfCheckParameters

SELF_CHECK_FILE = "self_check.npz"
VECTORS = "reference"
"""The array of reference vectors in the file; every other array is an encoder input ([n, length] int64)."""


class SelfCheckError(RuntimeError):
    """The served engine does not reproduce the stored references on this CPU."""


def min_cosine(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(min, mean) cosine between matching rows; the gate's measure."""
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cand = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cos = np.sum(ref * cand, axis=1)
    return float(cos.min()), float(cos.mean())


@dataclass(frozen=True)
class References:
    """Tokenized texts (the encoder's own inputs) and the vectors the fp32 reference model gave them."""

    inputs: dict[str, np.ndarray]
    vectors: np.ndarray

    def save(self, path: Path) -> Path:
        np.savez(path, **{VECTORS: self.vectors.astype(np.float32)}, **self.inputs)
        return path

    @classmethod
    def load(cls, path: Path) -> References:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        vectors = arrays.pop(VECTORS)
        return cls(inputs={name: a.astype(np.int64) for name, a in arrays.items()}, vectors=vectors)

    @property
    def lengths(self) -> np.ndarray:
        return self.inputs["attention_mask"].sum(axis=1)


@dataclass(frozen=True)
class SelfCheckResult:
    model: str
    min_cosine: float
    threshold: float
    precision: str
    cpu: CpuFeatures
    int8_target: Int8Target | None
    texts: int

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold

    def advice(self) -> str:
        if self.precision == "int8" and self.int8_target is Int8Target.VNNI and not self.cpu.vnni:
            return (
                "this int8 repository was made for VNNI CPUs and this one has none: re-export for it with "
                "--int8-target avx2 (or export on this machine)"
            )
        if self.precision == "int8":
            return "re-export on a machine with this CPU, or serve --precision fp32"
        return (
            "the engine computes other vectors here than where the repository was exported: re-export on this "
            "machine, or with another engine (--cpu-engine onnxruntime on CPU)"
        )

    def line(self) -> str:
        made_for = f", made for {self.int8_target.value} CPUs" if self.int8_target is not None else ""
        measured = (
            f"min cosine {self.min_cosine:.7f} to the fp32 reference over {self.texts} stored texts, threshold "
            f"{self.threshold} ({self.precision}{made_for}), CPU {self.cpu.describe()}"
        )
        if self.passed:
            return f"self-check passed for '{self.model}': {measured}"
        return f"self-check FAILED for '{self.model}', refusing to serve: {measured}. {self.advice()}"


def run_self_check(
    encode: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray],
    references: References,
    spec: SelfCheckParameters,
    model: str,
    cpu: CpuFeatures | None = None,
) -> SelfCheckResult:
    """Embed the references with ``encode(inputs, lengths)`` (the serving path) and judge them."""
    if spec.self_check_min_cosine is None:
        raise ValueError(f"model '{model}' has self_check_file but no self_check_min_cosine")
    vectors = encode(references.inputs, references.lengths)
    low, _ = min_cosine(references.vectors, vectors)
    return SelfCheckResult(
        model=model,
        min_cosine=low,
        threshold=spec.self_check_min_cosine,
        precision=spec.precision,
        cpu=cpu or CpuFeatures.read(),
        int8_target=Int8Target(spec.int8_target) if spec.int8_target else None,
        texts=len(references.vectors),
    )
