"""Latency percentiles and throughput from what one load run recorded. Pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default method)."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lower = math.floor(rank)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (rank - lower)


@dataclass
class RunRecord:
    """What a load run saw: one latency per successful request, plus counts and the first error."""

    latencies_s: list[float] = field(default_factory=list)
    texts: int = 0
    tokens: int = 0
    reported_tokens: int | None = None  # what the server said it counted; None if it says nothing
    errors: int = 0
    first_error: str | None = None
    elapsed_s: float = 0.0

    def add_success(self, latency_s: float, texts: int, tokens: int, reported: int | None) -> None:
        self.latencies_s.append(latency_s)
        self.texts += texts
        self.tokens += tokens
        if reported is not None:
            self.reported_tokens = (self.reported_tokens or 0) + reported

    def add_error(self, message: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = message


@dataclass(frozen=True)
class Throughput:
    """Rates and latency percentiles of one run (latencies in milliseconds)."""

    requests: int
    errors: int
    texts: int
    tokens: int
    elapsed_s: float
    texts_per_s: float
    tokens_per_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


def summarize(record: RunRecord) -> Throughput:
    """Rates over the wall time of the whole run (all workers), percentiles over successful requests."""
    elapsed = record.elapsed_s
    ms = [s * 1000.0 for s in record.latencies_s]

    def rate(amount: int) -> float:
        return amount / elapsed if elapsed > 0 else 0.0

    return Throughput(
        requests=len(ms),
        errors=record.errors,
        texts=record.texts,
        tokens=record.tokens,
        elapsed_s=elapsed,
        texts_per_s=rate(record.texts),
        tokens_per_s=rate(record.tokens),
        requests_per_s=rate(len(ms)),
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / len(ms) if ms else math.nan,
        max_ms=max(ms) if ms else math.nan,
    )


def ratio(served: float, baseline: float | None) -> float | None:
    """served / baseline, or None when there is no baseline to compare with."""
    if baseline is None or baseline <= 0:
        return None
    return served / baseline
