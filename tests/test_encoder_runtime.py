"""Unit tests of the CPU encoder's batching math and input checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bge_model_repository.encoder_runtime import (
    default_intra_op_threads,
    merge_rows,
    plan_sub_batches,
    validate_inputs,
)
from bge_model_repository.tokenization import InputError


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 512), min_size=1, max_size=200),
    max_batch=st.integers(1, 64),
    max_tokens=st.integers(512, 16384),
    multiple=st.sampled_from([1, 8, 64]),
)
def test_plan_covers_every_row_once_within_budgets(
    lengths: list[int], max_batch: int, max_tokens: int, multiple: int
) -> None:
    plans = plan_sub_batches(lengths, max_batch, max_tokens, multiple)
    rows = np.concatenate([p.rows for p in plans])
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    for plan in plans:
        assert len(plan.rows) <= max_batch
        assert all(plan.width >= lengths[r] for r in plan.rows)
        assert len(plan.rows) == 1 or plan.width * len(plan.rows) <= max_tokens


def test_sorting_keeps_padding_low_for_mixed_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 513, size=64)
    plans = plan_sub_batches(lengths, 64, 8192, 8)
    computed = sum(p.width * len(p.rows) for p in plans)
    assert computed / lengths.sum() < 1.1  # vs ~1.9 when padding all 64 rows to the longest


def test_merge_rows_pads_each_request_to_the_widest() -> None:
    a = {"input_ids": np.ones((2, 3), np.int64), "attention_mask": np.ones((2, 3), np.int64)}
    b = {"input_ids": np.full((1, 5), 7, np.int64), "attention_mask": np.ones((1, 5), np.int64)}
    merged, counts = merge_rows([a, b])
    assert counts == [2, 1]
    assert merged["input_ids"].shape == (3, 5)
    assert merged["attention_mask"].sum(axis=1).tolist() == [3, 3, 5]


def _inputs(ids: list[list[int]], mask: list[list[int]]) -> dict[str, np.ndarray]:
    return {"input_ids": np.array(ids, np.int64), "attention_mask": np.array(mask, np.int64)}


ONE_ROW = _inputs([[101, 5, 102]], [[1, 1, 1]])


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (_inputs([[101, 99999]], [[1, 1]]), r"token ids must be in \[0, 21128\)"),
        (_inputs([[101, -1]], [[1, 1]]), r"token ids must be in"),
        (_inputs([[0, 0]], [[0, 0]]), "at least one token"),
        (_inputs([[1] * 600], [[1] * 600]), "600 tokens, over the model's limit of 512"),
        ({"input_ids": np.ones((1, 3), np.int64), "attention_mask": np.ones((1, 2), np.int64)}, "must be equal"),
        (_inputs([[101, 5, 102]], [[1, 2, 1]]), "attention_mask values must be 0 or 1"),
        (_inputs([[101, 5, 102]], [[1, 0, 1]]), "1s then 0s"),
        (
            {**_inputs([[101, 5, 102]], [[1, 1, 1]]), "token_type_ids": np.array([[2, 2, 2]])},
            r"token_type_ids must be in \[0, 2\)",
        ),
        (
            {**_inputs([[101, 5, 102]], [[1, 1, 1]]), "token_type_ids": np.array([[0, -1, 0]])},
            "token_type_ids must be in",
        ),
    ],
)
def test_validate_rejects_what_would_crash_the_graph(inputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_inputs(inputs, 512, 21128)


def test_validate_returns_real_lengths() -> None:
    lengths = validate_inputs(_inputs([[101, 5, 102, 0], [101, 102, 0, 0]], [[1, 1, 1, 0], [1, 1, 0, 0]]), 512, 21128)
    assert lengths.tolist() == [3, 2]


def test_default_threads_share_the_cores_among_instances() -> None:
    assert default_intra_op_threads(2, cpus=2) == 1
    assert default_intra_op_threads(2, cpus=16) == 8
    assert default_intra_op_threads(3, cpus=2) == 1  # never 0
    assert default_intra_op_threads(1) >= 1  # this machine's affinity
