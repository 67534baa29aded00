"""Names fixed by docs/CONTRACT.md, written once so the client and the gateway cannot drift apart.

Constants and one pure config reader: no tritonclient import, so the gateway keeps a single module
that talks to Triton and this one stays importable everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_MODEL = "bge-large-zh-v1.5"
"""Triton ensemble name written by `bge-export`, also the gateway's served model name."""

ENCODER_SUFFIX = "-encoder"
"""`<model>-encoder` takes token ids directly (no tokenizer in front of it)."""

# Ensemble tensors.
TEXT = "text"
EMBEDDING = "embedding"
NUM_TOKENS = "num_tokens"

# Encoder tensors (INT64 [n, L], right-padded with 0).
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"

TRUNCATE_PARAMETER = "truncate"
Truncate = Literal["NONE", "START", "END"]
DEFAULT_TRUNCATE: Truncate = "END"

MAX_INPUT_TOKENS = 512
"""BERT's position limit, [CLS] and [SEP] included."""

QUERY_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："
"""BGE's retrieval instruction, prepended to short queries only (passages get none)."""

QUEUE_FULL_MARKER = "Exceeds maximum queue size"
"""Text of Triton's UNAVAILABLE answer when a model's queue is full: overload, not an outage."""


def is_queue_full(message: str) -> bool:
    """Whether a Triton error message says a queue is full (retry soon) rather than the server is down."""
    return QUEUE_FULL_MARKER.lower() in message.lower()

DEFAULT_GRPC_URL = "localhost:8001"
DEFAULT_HTTP_URL = "localhost:8000"


@dataclass(frozen=True)
class ModelFacts:
    """What a caller needs from a model's config: rows per request and the embedding size."""

    max_batch_size: int
    dim: int


def read_model_facts(answer: dict[str, Any]) -> ModelFacts:
    """Read a `get_model_config` answer (gRPC wraps it in "config"; int64 fields arrive as strings)."""
    config = answer.get("config", answer)
    outputs = {o["name"]: o for o in config.get("output", [])}
    if EMBEDDING not in outputs:
        raise ValueError(f"model '{config.get('name')}' has no '{EMBEDDING}' output; is it the ensemble?")
    return ModelFacts(max_batch_size=max(1, int(config.get("max_batch_size", 1))),
                      dim=int(outputs[EMBEDDING]["dims"][-1]))
