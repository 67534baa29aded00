"""The table, the JSON file and the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bge_deploy.bench.report import format_table, json_safe, lookup, write_json, write_plot


def scenario(target: str, concurrency: int, texts_per_s: float, padding: float | None) -> dict:
    return {
        "target": target,
        "lengths": "64",
        "texts_per_request": 1,
        "concurrency": concurrency,
        "throughput": {
            "requests": 20,
            "errors": 0,
            "texts_per_s": texts_per_s,
            "tokens_per_s": texts_per_s * 64,
            "p50_ms": 5.0,
            "p90_ms": 9.0,
            "p99_ms": math.nan,
        },
        "server": {"mean_encoder_batch": 2.0, "padding_ratio": padding, "encoder_queue_ms": 1.5},
        "baseline": {"as_requests": {"texts_per_s": 50.0}, "offline_sorted": {"texts_per_s": 80.0}},
        "ratio": texts_per_s / 50.0,
        "ratio_sorted": texts_per_s / 80.0,
    }


RESULTS = [scenario("triton", 1, 100.0, 1.0), scenario("triton", 8, 1234.5, None), scenario("gateway", 8, 900.0, 1.1)]


def test_lookup_follows_dotted_paths() -> None:
    assert lookup(RESULTS[0], "baseline.as_requests.texts_per_s") == 50.0
    assert lookup(RESULTS[0], "baseline.missing.texts_per_s") is None
    assert lookup({"baseline": None}, "baseline.as_requests") is None


def test_table_has_one_row_per_scenario_and_says_na() -> None:
    table = format_table(RESULTS).splitlines()
    assert "texts/s" in table[0] and "p99 ms" in table[0] and "ratio" in table[0]
    assert len(table) == 2 + len(RESULTS)
    assert "1,234" in table[3] and "n/a" in table[3]  # no padding ratio, NaN p99
    assert "24.69" in table[3]  # served / baseline


def test_json_has_no_nan(tmp_path: Path) -> None:
    path = write_json(tmp_path / "out" / "results.json", {"notes": []}, RESULTS)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["scenarios"][0]["throughput"]["p99_ms"] is None
    assert json_safe([math.inf, 1.0, {"a": (math.nan,)}]) == [None, 1.0, {"a": [None]}]


def test_plot_is_a_png(tmp_path: Path) -> None:
    path = write_plot(tmp_path / "throughput.png", RESULTS, "test")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_plot(tmp_path / "empty.png", [], "") is None
