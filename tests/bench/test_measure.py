"""Percentiles and rates: the numbers the table prints."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bge_deploy.bench.measure import RunRecord, percentile, ratio, summarize


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("q", [0, 1, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(seed: int, q: float) -> None:
    rng = random.Random(seed)
    values = [rng.expovariate(1.0) for _ in range(rng.randint(1, 300))]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0  # order of arrival does not matter
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_rates_over_wall_time_and_percentiles_over_successes() -> None:
    record = RunRecord(elapsed_s=2.0)
    for i in range(1, 11):
        record.add_success(latency_s=i / 1000, texts=4, tokens=256, reported=256)
    record.add_error("StatusCode.UNAVAILABLE: queue full")
    record.add_error("later error")
    result = summarize(record)
    assert (result.requests, result.errors, result.texts, result.tokens) == (10, 2, 40, 2560)
    assert result.texts_per_s == 20.0 and result.tokens_per_s == 1280.0 and result.requests_per_s == 5.0
    assert result.p50_ms == pytest.approx(5.5)
    assert result.p90_ms == pytest.approx(9.1)
    assert result.p99_ms == pytest.approx(9.91)
    assert result.max_ms == pytest.approx(10.0) and result.mean_ms == pytest.approx(5.5)
    assert record.first_error == "StatusCode.UNAVAILABLE: queue full"
    assert record.reported_tokens == 2560


def test_summarize_a_run_where_everything_failed() -> None:
    record = RunRecord(elapsed_s=1.0)
    record.add_error("boom")
    result = summarize(record)
    assert result.requests == 0 and result.texts_per_s == 0.0 and math.isnan(result.p99_ms)


def test_ratio() -> None:
    assert ratio(300.0, 100.0) == 3.0
    assert ratio(300.0, None) is None
    assert ratio(300.0, 0.0) is None
