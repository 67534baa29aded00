"""Unit tests of the batching math shared by the client and the gateway."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bge_client.batching import Dedup, chunk_slices, gather_or_cancel, pad_token_ids, text_array


@given(n=st.integers(0, 5000), size=st.integers(1, 300))
def test_chunks_cover_every_row_once_in_order_within_the_batch(n: int, size: int) -> None:
    slices = chunk_slices(n, size)
    rows = [i for s in slices for i in range(s.start, s.stop)]
    assert rows == list(range(n))
    assert all(0 < s.stop - s.start <= size for s in slices)
    assert len(slices) == -(-n // size)


def test_2048_inputs_at_batch_64_are_32_requests() -> None:
    assert len(chunk_slices(2048, 64)) == 32


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        chunk_slices(3, 0)


@given(st.lists(st.sampled_from(["a", "b", "c", "今天", ""]), max_size=50))
def test_dedup_computes_each_text_once_and_expands_back(items: list[str]) -> None:
    dedup = Dedup.of(items)
    assert sorted(dedup.unique) == sorted(set(items))  # each distinct text exactly once
    rows = np.arange(len(dedup.unique)) * 10  # "computed" once per distinct text
    assert dedup.expand(rows).tolist() == [dedup.unique.index(item) * 10 for item in items]
    for i, item in enumerate(items):
        assert dedup.first_index(int(dedup.inverse[i])) == items.index(item)


def test_dedup_keeps_first_seen_order() -> None:
    dedup = Dedup.of(["b", "a", "b", "c", "a"])
    assert dedup.unique == ["b", "a", "c"]
    assert dedup.inverse.tolist() == [0, 1, 0, 2, 1]


def test_pad_token_ids_right_pads_with_zero_mask_and_zero_types() -> None:
    tensors = pad_token_ids([[101, 5, 102], [101, 102]])
    assert tensors["input_ids"].tolist() == [[101, 5, 102], [101, 102, 0]]
    assert tensors["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert tensors["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert all(t.dtype == np.int64 for t in tensors.values())


def test_gather_or_cancel_keeps_order_and_bounds_concurrency() -> None:
    running = 0
    peak = 0

    async def job(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (10 - i))  # later jobs finish first
        running -= 1
        return i

    results = asyncio.run(gather_or_cancel([lambda i=i: job(i) for i in range(10)], limit=3))
    assert results == list(range(10)) and peak == 3


def test_gather_or_cancel_cancels_the_rest_on_failure() -> None:
    finished: list[int] = []

    async def job(i: int) -> int:
        if i == 0:
            raise RuntimeError("boom")
        await asyncio.sleep(0.05)
        finished.append(i)
        return i

    async def run() -> None:
        with pytest.raises(RuntimeError, match="boom"):
            await gather_or_cancel([lambda i=i: job(i) for i in range(5)], limit=5)
        await asyncio.sleep(0.1)

    asyncio.run(run())
    assert finished == []


def test_text_array_is_utf8_bytes_in_one_column() -> None:
    array = text_array(["今天", "a"])
    assert array.shape == (2, 1) and array.dtype == np.object_
    assert array[:, 0].tolist() == ["今天".encode(), b"a"]
