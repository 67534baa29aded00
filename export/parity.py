"""Parity gate: the exported graph must embed like the PyTorch / sentence-transformers reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bge_model_repository.encoder_runtime import CpuEngine, open_encoder, token_batch_inputs
from bge_model_repository.self_check import References, min_cosine
from bge_model_repository.tokenization import load_tokenizer, tokenize

_ZH = "检索增强生成系统需要把中文文档切成段落，并为每个段落计算向量，再按余弦相似度召回最相关的内容。"
_EN = "Retrieval-augmented generation splits documents into passages and ranks them by cosine similarity. "

# Chinese and English, from one token to past the 512-token limit (so truncation is covered).
PARITY_TEXTS: tuple[str, ...] = (
    "好",
    "a",
    "今天天气怎么样",
    "How is the weather today?",
    "我喜欢看电影，尤其是科幻片。I also like documentaries about space.",
    _ZH * 3,
    _EN * 6,
    (_ZH + _EN) * 4,
    _ZH * 11,
    _EN * 40,
)


SELF_CHECK_TEXTS = 6
"""Parity texts stored for the serving machine's self-check: 3 to 143 tokens for bge, cheap at load, and every
one of them already shows int8 saturation (below 0.98 on an AVX2 CPU with full-range weights)."""


class ParityError(RuntimeError):
    """The export does not reproduce the reference closely enough."""


@dataclass(frozen=True)
class ParityResult:
    min_cosine: float
    mean_cosine: float
    threshold: float
    token_counts: list[int]

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold

    def summary(self) -> str:
        return (
            f"parity: min cosine {self.min_cosine:.7f}, mean {self.mean_cosine:.7f} over "
            f"{len(self.token_counts)} texts of {min(self.token_counts)}-{max(self.token_counts)} tokens "
            f"(threshold {self.threshold})"
        )


def reference_embeddings(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    """sentence-transformers' own encode: the thing users compare against."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = max_length
    return model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)


def onnx_embeddings(
    onnx_path: Path,
    tokenizer_dir: Path,
    texts: list[str],
    max_length: int,
    engine: CpuEngine = CpuEngine.ONNXRUNTIME,
) -> tuple[np.ndarray, list[int]]:
    """The served path minus Triton: our tokenizer, one padded batch, the ONNX graph on the served engine."""
    batch = tokenize(load_tokenizer(tokenizer_dir), texts, max_length)
    encoder = open_encoder(engine, onnx_path)
    vectors = encoder.run(token_batch_inputs(batch))
    return vectors, batch.num_tokens.ravel().tolist()


def check_parity(
    reference: np.ndarray, candidate: np.ndarray, threshold: float, token_counts: list[int]
) -> ParityResult:
    low, mean = min_cosine(reference, candidate)
    return ParityResult(low, mean, threshold, token_counts)


def self_check_references(tokenizer_dir: Path, reference: np.ndarray, max_length: int) -> References:
    """The first SELF_CHECK_TEXTS parity texts, tokenized as served, with the gate's reference vectors."""
    batch = tokenize(load_tokenizer(tokenizer_dir), list(PARITY_TEXTS[:SELF_CHECK_TEXTS]), max_length)
    return References(inputs=token_batch_inputs(batch), vectors=reference[:SELF_CHECK_TEXTS])
