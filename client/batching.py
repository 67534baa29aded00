"""Batching shared by the client and the gateway: chunking, de-duplication, padding, bounded fan-out.

Kept free of I/O so it is unit-tested without a server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from bge_model_repository.contract import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS

T = TypeVar("T", bound=Hashable)
R = TypeVar("R")


def chunk_slices(n: int, size: int) -> list[slice]:
    """Cut [0, n) into consecutive slices of at most `size` items: one Triton request each.

    Triton rejects a request with more rows than the model's `max_batch_size`, so a large
    caller batch must be split; consecutive slices keep reassembly a plain concatenation.
    """
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


@dataclass(frozen=True)
class Dedup(Generic[T]):
    """Distinct items in first-seen order, and where each original item sits among them.

    Identical inputs in one request are computed once; `expand` puts the results back in
    the caller's order.
    """

    unique: list[T]
    inverse: np.ndarray  # int64 [n]: index into `unique` of original item i

    @classmethod
    def of(cls, items: Sequence[T]) -> Dedup[T]:
        positions: dict[T, int] = {}
        inverse = np.empty(len(items), dtype=np.int64)
        for i, item in enumerate(items):
            inverse[i] = positions.setdefault(item, len(positions))
        return cls(unique=list(positions), inverse=inverse)

    def expand(self, rows: np.ndarray) -> np.ndarray:
        """Rows computed for `unique` -> rows for every original item (first axis)."""
        return rows[self.inverse]

    def first_index(self, unique_index: int) -> int:
        """Position in the original input of the first item equal to `unique[unique_index]`."""
        return int(np.argmax(self.inverse == unique_index))


def text_array(texts: Sequence[str]) -> np.ndarray:
    """Texts -> the ensemble's `text` input: a BYTES (object) [n, 1] array of UTF-8."""
    return np.array([t.encode("utf-8") for t in texts], dtype=np.object_).reshape(-1, 1)


def pad_token_ids(rows: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Token-id lists -> the encoder's three INT64 [n, L] tensors, right-padded with 0.

    The mask is 1 on real tokens; token_type_ids are all 0 (single-segment input).
    """
    width = max((len(r) for r in rows), default=0)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return {INPUT_IDS: ids, ATTENTION_MASK: mask, TOKEN_TYPE_IDS: np.zeros_like(ids)}


async def gather_or_cancel(calls: Sequence[Callable[[], Awaitable[R]]], limit: int) -> list[R]:
    """Run `calls` concurrently, at most `limit` at a time, results in call order.

    On the first failure the rest are cancelled rather than left running for nobody. Calls are
    factories so a call cancelled before its turn never creates a coroutine.
    """
    gate = asyncio.Semaphore(limit)

    async def gated(call: Callable[[], Awaitable[R]]) -> R:
        async with gate:
            return await call()

    tasks = [asyncio.ensure_future(gated(call)) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
