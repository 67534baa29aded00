"""Unit tests of the CPU encoder's batching math and input checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bge_model_repository.encoder_runtime import (
    Encoder,
    Parallelism,
    default_parallelism,
    merge_rows,
    validate_inputs,
)
from bge_model_repository.sub_batches import SubBatch, plan_sub_batches, spread_over_lanes
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


def test_default_parallelism_shares_the_cores_among_instances_then_lanes() -> None:
    assert default_parallelism(1, cpus=2) == Parallelism(lanes=2, threads=1)
    assert default_parallelism(1, cpus=16) == Parallelism(lanes=4, threads=4)
    assert default_parallelism(1, cpus=6) == Parallelism(lanes=3, threads=2)
    assert default_parallelism(2, cpus=16) == Parallelism(lanes=4, threads=2)
    assert default_parallelism(3, cpus=2) == Parallelism(lanes=1, threads=1)  # never 0
    assert default_parallelism(1, threads=2, cpus=8) == Parallelism(lanes=4, threads=2)  # lanes fill the rest
    assert default_parallelism(1, lanes=2, cpus=8) == Parallelism(lanes=2, threads=4)
    assert default_parallelism(1, lanes=3, threads=3, cpus=2) == Parallelism(lanes=3, threads=3)  # as told
    mine = default_parallelism(1)  # this machine's affinity
    assert mine.lanes >= 1 and mine.threads >= 1


def test_spread_cuts_the_costliest_run_until_every_lane_has_one() -> None:
    lengths = np.array([64] * 32)
    [whole] = plan_sub_batches(lengths, 64, 8192, 8)
    assert len(whole.rows) == 32  # one run: the planner alone would leave a lane idle
    halves = spread_over_lanes([whole], 2, lengths, 8)
    assert [len(p.rows) for p in halves] == [16, 16] and {p.width for p in halves} == {64}
    assert sorted(np.concatenate([p.rows for p in halves]).tolist()) == list(range(32))
    assert len(spread_over_lanes([whole], 4, lengths, 8)) == 4
    # a single row cannot be cut; nothing is lost or invented
    one = plan_sub_batches([10], 64, 8192, 8)
    assert spread_over_lanes(one, 2, [10], 8) == one


def test_spread_pads_each_half_to_its_own_longest_and_hands_out_the_longest_first() -> None:
    lengths = np.array([8] * 8 + [200] * 8)
    plan = [SubBatch(rows=np.argsort(lengths, kind="stable"), width=200)]
    short, long_ = sorted(spread_over_lanes(plan, 2, lengths, 8), key=lambda p: p.width)
    assert (short.width, long_.width) == (8, 200)
    assert spread_over_lanes(plan, 2, lengths, 8)[0].width == 200  # costliest first


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 512), min_size=1, max_size=100),
    lanes=st.integers(1, 8),
)
def test_spread_keeps_every_row_once_and_widths_cover_rows(lengths: list[int], lanes: int) -> None:
    plans = spread_over_lanes(plan_sub_batches(lengths, 64, 8192, 8), lanes, lengths, 8)
    rows = np.concatenate([p.rows for p in plans])
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    assert all(p.width >= max(lengths[r] for r in p.rows) for p in plans)
    assert len(plans) >= min(lanes, len(lengths))


class RecordingEncoder(Encoder):
    """A fake engine (the unit under test is the lanes' scheduling): row i's vector is [first id of row i] * 2;
    each run sleeps `seconds_per_row` per row and records which threads ran at once and when each run began."""

    def __init__(self, lanes: int, seconds_per_row: float = 0.0, fail_on: int | None = None) -> None:
        import threading

        self.input_names = ["input_ids", "attention_mask"]
        self.dim = 2
        self.active = 0
        self.most_at_once = 0
        self.seconds_per_row = seconds_per_row
        self.fail_on = fail_on
        self.started: dict[int, float] = {}  # first id of a run's first row -> when the run began
        self.lock = threading.Lock()
        self._start_lanes(lanes)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import time

        ids = inputs["input_ids"][:, 0]
        with self.lock:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
            self.started[int(ids[0])] = time.monotonic()
        time.sleep(self.seconds_per_row * len(ids) if self.seconds_per_row else 0.05)
        with self.lock:
            self.active -= 1
        if self.fail_on is not None and self.fail_on in ids:
            raise RuntimeError(f"engine failed on row {self.fail_on}")
        return np.repeat(inputs["input_ids"][:, :1].astype(np.float32), 2, axis=1)


def _rows(first_ids: list[int], length: int = 16) -> tuple[dict[str, np.ndarray], np.ndarray]:
    ids = np.zeros((len(first_ids), length), np.int64)
    ids[:, 0] = first_ids
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}, np.full(len(first_ids), length)


def test_lanes_run_sub_batches_at_once_and_rows_come_back_in_order() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 100, size=32)
    ids = np.zeros((32, 100), np.int64)
    mask = (np.arange(100) < lengths[:, None]).astype(np.int64)
    ids[:, 0] = np.arange(32) + 1000
    for lanes in (1, 2, 4):
        encoder = RecordingEncoder(lanes)
        out, stats = encoder.encode({"input_ids": ids, "attention_mask": mask}, lengths, 64, 8192, 8)
        encoder.close()
        assert out[:, 0].tolist() == (np.arange(32) + 1000).tolist()  # each row's own vector, in order
        assert encoder.most_at_once == lanes and stats.batches >= lanes
        assert stats.texts == 32 and stats.real_tokens == int(lengths.sum())
        assert stats.padded_tokens >= stats.real_tokens


def test_a_free_lane_starts_the_next_batch_while_the_other_finishes_this_one() -> None:
    """Work-conserving across Triton's batches: three equal rows on two lanes run as 2 + 1, and the lane
    with one row takes the next batch's row instead of waiting for the lane with two."""
    import time

    encoder = RecordingEncoder(2, seconds_per_row=0.2)
    first = encoder.submit(*_rows([1, 2, 3]), 64, 8192, 8)
    done_at: list[float] = []
    first.add_done_callback(lambda _: done_at.append(time.monotonic()))
    second = encoder.submit(*_rows([7]), 64, 8192, 8)
    vectors, stats = first.result(timeout=5)
    assert second.result(timeout=5)[0][:, 0].tolist() == [7.0]
    encoder.close()
    assert vectors[:, 0].tolist() == [1.0, 2.0, 3.0] and stats.batches == 2
    assert encoder.started[7] < done_at[0] - 0.1, "the second batch waited for the first to finish"


def test_an_engine_error_fails_its_batch_only() -> None:
    encoder = RecordingEncoder(2, fail_on=5)
    failed = encoder.submit(*_rows([4, 5, 6, 8]), 64, 8192, 8)
    fine = encoder.submit(*_rows([9]), 64, 8192, 8)
    with pytest.raises(RuntimeError, match="row 5"):
        failed.result(timeout=5)
    assert fine.result(timeout=5)[0][:, 0].tolist() == [9.0]
    with pytest.raises(RuntimeError, match="row 5"):  # without lanes too, through encode
        RecordingEncoder(1, fail_on=5).encode(*_rows([5]), 64, 8192, 8)
    encoder.close()
