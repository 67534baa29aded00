"""What the service needs from an inference server, and nothing about HTTP or tritonclient.

The `Backend` interface (implemented for Triton in `triton_backend`, by a stand-in in unit tests),
the model facts it reports, and the deadline every call carries. The layer below the service: the
service and the Triton backend import this module, never each other.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bge_model_repository.contract import Truncate


@dataclass(frozen=True)
class Deadline:
    """When a request must be answered (``time.monotonic()``), handed to every call it makes."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def left_s(self) -> float:
        return self.at - time.monotonic()


@dataclass(frozen=True)
class ModelInfo:
    """What the gateway reads from the served model's Triton configs once the model is ready."""

    max_batch_size: int  # of the ensemble: rows per text request
    encoder_max_batch_size: int  # rows per token-id request
    dim: int  # native embedding size
    max_length: int  # the export's token limit, [CLS] and [SEP] included: applied to token-id input
    query_instruction: str  # prepended to queries (input_type=query); empty if the model has none
    server_version: str = ""  # Triton's, e.g. "2.51.0"
    # what the model's own token-id rows look like (None: the export did not say)
    vocab_size: int | None = None
    cls_token_id: int | None = None
    sep_token_id: int | None = None
    precision: str | None = None  # fp32 / fp16 / int8, as exported
    pooling: str | None = None  # cls / mean


class Backend(Protocol):
    """The few calls the service needs from an inference server."""

    url: str

    async def model_info(self) -> ModelInfo: ...

    async def check_ready(self) -> None:
        """Return if the model can serve, else raise GatewayError(UNAVAILABLE) saying why."""

    async def embed_texts(
        self, texts: Sequence[str], truncate: Truncate, deadline: Deadline
    ) -> tuple[np.ndarray, np.ndarray]:
        """float32 [n, D] vectors and int [n] token counts."""

    async def tokenize(self, texts: Sequence[str], truncate: Truncate, deadline: Deadline) -> list[list[int]]:
        """Each text's token ids as the model's tokenizer gives them to the encoder (same truncation)."""

    async def embed_token_ids(self, ids: Sequence[Sequence[int]], deadline: Deadline) -> np.ndarray:
        """float32 [n, D] vectors for token-id rows."""

    async def close(self) -> None: ...
