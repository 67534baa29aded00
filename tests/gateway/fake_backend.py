"""A stand-in `Backend` for unit tests of the gateway's own logic (never for integration tests).

Vectors are a deterministic function of the text, so tests can check order, de-duplication and
chunking by what the backend was asked and what came back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from bge_client.gateway.errors import GatewayError
from bge_client.gateway.inference import Deadline, ModelInfo
from bge_model_repository.contract import MAX_INPUT_TOKENS, QUERY_INSTRUCTION, Truncate

DIM = 8


def vector_for(key: str) -> np.ndarray:
    """Unit vector derived from `key`."""
    rng = np.random.default_rng(abs(hash(key)) % 2**32)
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


VOCAB_SIZE, CLS, SEP = 21128, 101, 102


class FakeBackend:
    url = "fake:0"

    def __init__(
        self, max_batch_size: int = 4, fail: GatewayError | None = None, hold: asyncio.Event | None = None
    ) -> None:
        self.info = ModelInfo(
            max_batch_size=max_batch_size,
            encoder_max_batch_size=max_batch_size,
            dim=DIM,
            max_length=MAX_INPUT_TOKENS,
            query_instruction=QUERY_INSTRUCTION,
            vocab_size=VOCAB_SIZE,
            cls_token_id=CLS,
            sep_token_id=SEP,
        )
        self.deadlines: list[Deadline] = []
        self.fail = fail
        self.hold = hold
        self.text_calls: list[tuple[list[str], Truncate]] = []
        self.token_calls: list[list[list[int]]] = []
        self.ready = True

    async def model_info(self) -> ModelInfo:
        await self.check_ready()
        return self.info

    async def check_ready(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def embed_texts(
        self, texts: Sequence[str], truncate: Truncate, deadline: Deadline
    ) -> tuple[np.ndarray, np.ndarray]:
        self.text_calls.append((list(texts), truncate))
        self.deadlines.append(deadline)
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        return np.stack([vector_for(t) for t in texts]), np.array([len(t) + 2 for t in texts], dtype=np.int32)

    async def embed_token_ids(self, ids: Sequence[Sequence[int]], deadline: Deadline) -> np.ndarray:
        self.token_calls.append([list(row) for row in ids])
        self.deadlines.append(deadline)
        return np.stack([vector_for(str(list(row))) for row in ids])

    async def close(self) -> None:
        return None
