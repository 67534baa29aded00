"""The closed-loop load loop and the loopback guard (the drivers' network code runs end to end elsewhere)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bge_deploy.bench.drivers import check_targets, host_of, is_loopback, run_load
from bge_deploy.bench.workload import Request

REQUESTS = [Request(("甲",) * 2, 6), Request(("乙",) * 2, 8)]


class InstantDriver:
    """Answers after `delay_s`, failing every `fail_every`-th call; records how many ran at once."""

    target = "fake"

    def __init__(self, delay_s: float = 0.001, fail_every: int = 0) -> None:
        self.delay_s = delay_s
        self.fail_every = fail_every
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0

    async def embed(self, texts: Sequence[str]) -> int | None:
        self.calls += 1
        number = self.calls
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail_every and number % self.fail_every == 0:
                raise RuntimeError("queue full")
            return 3 * len(texts)
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


def test_run_load_stops_at_the_request_count_and_keeps_concurrency() -> None:
    driver = InstantDriver()
    done = []
    record = asyncio.run(run_load(driver, REQUESTS, 4, 25, 30.0, lambda: done.append(1)))
    assert driver.calls == 25 and len(done) == 25
    assert driver.most_in_flight == 4
    assert len(record.latencies_s) == 25 and record.errors == 0
    assert record.texts == 50
    assert record.tokens == 13 * 6 + 12 * 8  # round robin over the two requests
    assert record.reported_tokens == 25 * 6
    assert record.elapsed_s > 0


def test_run_load_stops_at_the_time_limit() -> None:
    driver = InstantDriver(delay_s=0.01)
    record = asyncio.run(run_load(driver, REQUESTS, 2, None, 0.2))
    assert 0.15 < record.elapsed_s < 2.0
    assert 0 < driver.calls < 200


def test_run_load_counts_errors_and_goes_on() -> None:
    record = asyncio.run(run_load(InstantDriver(fail_every=3), REQUESTS, 3, 30, 30.0))
    assert record.errors == 10 and len(record.latencies_s) == 20
    assert record.first_error == "RuntimeError: queue full"


def test_run_load_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        asyncio.run(run_load(InstantDriver(), REQUESTS, 0, 1, 1.0))
    with pytest.raises(ValueError):
        asyncio.run(run_load(InstantDriver(), [], 1, 1, 1.0))


@pytest.mark.parametrize(
    ("url", "host"),
    [("http://127.0.0.1:30000", "127.0.0.1"), ("localhost:8001", "localhost"), ("http://[::1]:8002/metrics", "::1")],
)
def test_host_of(url: str, host: str) -> None:
    assert host_of(url) == host


def test_loopback_guard() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("192.0.2.10")  # TEST-NET-1, documentation only
    check_targets(["127.0.0.1:8001", "http://localhost:30000"], allow_remote=False)
    with pytest.raises(ValueError, match="--allow-remote"):
        check_targets(["127.0.0.1:8001", "http://192.0.2.10:30000"], allow_remote=False)
    check_targets(["http://192.0.2.10:30000"], allow_remote=True)
