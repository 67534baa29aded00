"""What every part of bge-triton agrees on, written once (docs/CONTRACT.md explains it in words).

Model and tensor names, request and config parameters, truncation, the wire form of an error about one
row, and the defaults the entry points share. Standard library only: the exporter, the models inside
Triton, the client, the gateway and the deploy tools all import it, and none of them imports another
for these values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

# -- models ------------------------------------------------------------------------------------------------

DEFAULT_SOURCE = "BAAI/bge-large-zh-v1.5"
"""The Hugging Face model exported when none is named (a hub id, or a local directory in its place)."""
DEFAULT_MODEL = "bge-large-zh-v1.5"
"""The served name: the Triton ensemble written by the export, and the OpenAI ``model`` id of the gateway."""
TOKENIZER_SUFFIX = "-tokenizer"
ENCODER_SUFFIX = "-encoder"
"""``<model>-encoder`` takes token ids directly (no tokenizer in front of it)."""


def served_name(source: str, name: str | None = None) -> str:
    """The served name of an export of ``source``: ``name`` if given, else the source's last path part."""
    return name or Path(source.rstrip("/")).name


def tokenizer_model(name: str) -> str:
    return name + TOKENIZER_SUFFIX


def encoder_model(name: str) -> str:
    return name + ENCODER_SUFFIX


# -- tensors -----------------------------------------------------------------------------------------------

TEXT = "text"  # ensemble and tokenizer input: BYTES [n, 1]
EMBEDDING = "embedding"  # ensemble and encoder output: FP32 [n, dim], unit norm
NUM_TOKENS = "num_tokens"  # ensemble and tokenizer output: INT32 [n, 1], [CLS] and [SEP] included
INPUT_IDS = "input_ids"  # encoder inputs: INT64 [n, L], right-padded with 0
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
ENCODER_INPUTS = (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)
"""In graph order; a model without token types takes the first two."""

# -- request parameters (config parameters: bge_model_repository.parameters) --------------------------------

TRUNCATE_PARAMETER = "truncate"
"""Request parameter of the ensemble and the tokenizer."""


class Truncate(str, Enum):
    """Which end of an over-long text is cut (NONE: refuse it instead)."""

    END = "END"
    START = "START"
    NONE = "NONE"


DEFAULT_TRUNCATE = Truncate.END

MAX_INPUT_TOKENS = 512
"""BERT's position limit, [CLS] and [SEP] included: the default when a model names none."""
QUERY_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："
"""BGE's retrieval instruction, prepended to short queries only (passages get none)."""

# -- errors ------------------------------------------------------------------------------------------------


def over_limit(tokens: int, limit: int) -> str:
    """What is wrong with an input over the limit under truncate=NONE, and how to fix it."""
    return f"has {tokens} tokens, over the model's limit of {limit} (truncate=NONE; use END or START to cut it)"


_ROW = re.compile(r"\btext (\d+) ")


@dataclass(frozen=True)
class RowError:
    """A problem with one row of a Triton request, carried in Triton's INVALID_ARGUMENT message.

    Triton's error is a string, so this class is both ends of its format: the tokenizer writes
    ``message()``, a caller reads the row back with ``find()``; nobody else parses the text.
    """

    row: int
    problem: str  # e.g. over_limit(602, 512), or "is not valid UTF-8 (...)"

    def message(self) -> str:
        return f"text {self.row} {self.problem}"

    @classmethod
    def find(cls, message: str) -> RowError | None:
        """The row error inside a Triton error message (which may prefix it, e.g. "in ensemble ..."), if any."""
        match = _ROW.search(message)
        return cls(int(match.group(1)), message[match.end() :]) if match else None


# -- the CPU encoder's own counters on Triton's metrics port (one quantity per name) -----------------------

REAL_TOKENS_METRIC = "bge_encoder_real_tokens_total"  # tokens with attention_mask = 1
COMPUTED_TOKENS_METRIC = "bge_encoder_computed_tokens_total"  # tokens the engine computed, padding included
TEXTS_METRIC = "bge_encoder_texts_total"  # rows through the encoder
RUNS_METRIC = "bge_encoder_runs_total"  # engine sub-batch runs (mean batch = texts / runs)


QUEUE_FULL_MARKER = "Exceeds maximum queue size"
"""Text of Triton's UNAVAILABLE answer when a model's queue is full: overload, not an outage."""


def is_queue_full(message: str) -> bool:
    """Whether a Triton error message says a queue is full (retry soon) rather than the server is down."""
    return QUEUE_FULL_MARKER.lower() in message.lower()


STUB_DEAD_MARKER = "is not healthy"
"""Text of Triton's INTERNAL answer when a Python-backend stub process has died ("Stub process '...' is not
healthy."): an outage until the launcher's watchdog has restarted tritonserver (seconds), not a bug in the
request."""


def is_stub_dead(message: str) -> bool:
    """Whether a Triton error message says the model's Python-backend stub has died (retry after a restart)."""
    return STUB_DEAD_MARKER in message


# -- where things listen and live --------------------------------------------------------------------------

DEFAULT_REPOSITORY = Path("build/model_repository")
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
GATEWAY_PORT = 30000
DEFAULT_GRPC_URL = f"localhost:{TRITON_GRPC_PORT}"
DEFAULT_HTTP_URL = f"localhost:{TRITON_HTTP_PORT}"
