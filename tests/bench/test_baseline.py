"""The baseline's bookkeeping: padding counted like the server counts it, sorted batches, time bound."""

from __future__ import annotations

import time

from bge_deploy.bench.baseline import computed_tokens, run_baseline, sorted_batches
from bge_deploy.bench.workload import Request


def test_computed_tokens_pad_each_batch_to_its_longest_row() -> None:
    assert computed_tokens([[3, 5], [8], []]) == 2 * 5 + 8


def test_sorted_batches_group_neighbours_in_length() -> None:
    lengths = [50, 3, 40, 4, 30, 5]
    batches = sorted_batches(lengths, 2)
    assert [[lengths[i] for i in b] for b in batches] == [[3, 4], [5, 30], [40, 50]]


def test_run_baseline_runs_both_variants_over_the_same_texts() -> None:
    seen: list[list[str]] = []

    def encode(texts: list[str]) -> None:
        seen.append(list(texts))

    lengths_of = {"a": 10, "b": 100, "c": 12, "d": 98}
    requests = [Request(("a", "b"), 110), Request(("c", "d"), 110)]
    as_requests, offline = run_baseline(encode, requests, lengths_of, threads=2, sorted_batch_size=2, max_seconds=5)
    assert seen[0] == ["a", "b"]  # warm-up
    assert seen[1:3] == [["a", "b"], ["c", "d"]]
    assert seen[3:] == [["a", "c"], ["d", "b"]]
    assert as_requests.texts == offline.texts == 4 and as_requests.tokens == offline.tokens == 220
    assert as_requests.padding_ratio == (2 * 100 + 2 * 98) / 220
    assert offline.padding_ratio == (2 * 12 + 2 * 100) / 220
    assert as_requests.threads == 2 and offline.batch_size == 2


def test_run_baseline_is_bounded_in_time() -> None:
    def slow(texts: list[str]) -> None:
        time.sleep(0.05)

    requests = [Request(("a",), 5)] * 1000
    start = time.perf_counter()
    as_requests, offline = run_baseline(slow, requests, {"a": 5}, 1, 8, max_seconds=0.1)
    assert time.perf_counter() - start < 2.0
    assert 1 <= as_requests.texts < 10 and offline.texts <= as_requests.texts
