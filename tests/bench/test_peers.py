"""bge-bench with peers: other OpenAI-compatible servers loaded in the same run, compared side by side,
with the served memory of each (a stand-in peer process: the peer is not what is tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openai_peer import BALLAST_MIB, CHILD_BALLAST_MIB
from pydantic import ValidationError
from support import REPO_ROOT, require_bge_assets

from bge_deploy.bench import footprint
from bge_deploy.bench.report import compare_tables, format_table, merged, peak_memory, workload_label
from bge_deploy.bench.scenarios import turns
from bge_deploy.bench.settings import BenchSettings
from bge_deploy.serving.process import free_port


def settings(*flags: str) -> BenchSettings:
    return BenchSettings.from_cli(["--model-dir", "/nonexistent", *flags])


def test_peers_flag_maps_names_to_base_urls_in_order() -> None:
    args = settings("--target", "gateway", "--peers", "infinity=http://127.0.0.1:7997/, tei=http://127.0.0.1:8080/v1")
    assert args.peers == {"infinity": "http://127.0.0.1:7997", "tei": "http://127.0.0.1:8080/v1"}
    assert args.targets == ("gateway", "infinity", "tei")
    assert settings("--target", "none", "--peers", "infinity=http://h:1").targets == ("infinity",)
    assert settings().peers == {} and settings().memory and not settings("--no-memory").memory


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://127.0.0.1:7997", "is not NAME=URL"),
        ("infinity=", "is not NAME=URL"),
        ("gateway=http://127.0.0.1:7997", "and not gateway or triton"),
        ("in finity=http://127.0.0.1:7997", "letters, digits"),
        ("a=http://h:1,a=http://h:2", "given twice"),
        ("infinity=127.0.0.1:7997", "is not an http(s) URL"),
    ],
)
def test_bad_peers_are_refused_naming_the_problem(value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings("--peers", value)


def result(target: str, concurrency: int, texts: int, rate: float, p50: float, p99: float, rss: float) -> dict:
    return {
        "target": target,
        "lengths": "64",
        "texts_per_request": texts,
        "concurrency": concurrency,
        "throughput": {"texts_per_s": rate, "p50_ms": p50, "p99_ms": p99},
        "memory": {"rss_mib": rss, "pss_mib": rss / 2},
    }


def test_compare_tables_put_each_workload_side_by_side_with_the_ratio() -> None:
    results = [
        result("gateway", 1, 32, 3.0, 10_000.0, 12_000.0, 2000.0),
        result("gateway", 8, 1, 3.2, 2500.0, 2600.0, 2100.0),
        result("infinity", 1, 32, 2.0, 15_000.0, 16_000.0, 1900.0),
        result("infinity", 8, 1, 1.6, 5000.0, 9000.0, 1800.0),
    ]
    assert workload_label(results[0]) == "1 client x 32 texts x 64 tokens"
    assert workload_label(results[1]) == "8 clients x 1 text x 64 tokens"
    assert peak_memory(results, "gateway", "rss_mib") == 2100.0
    lines = compare_tables(results).splitlines()
    assert lines[0].startswith("gateway vs infinity")
    assert "gateway texts/s" in lines[1] and "infinity p99/p50" in lines[1] and lines[1].endswith("ratio")
    one, eight = lines[3], lines[4]
    assert one.startswith("1 client x 32 texts") and one.split()[-1] == "1.50"
    assert eight.split()[-1] == "2.00" and "1.80" in eight.split()  # infinity's p99/p50
    assert lines[5] == (
        "served memory after load (largest over the scenarios): RSS MiB gateway 2,100, infinity 1,900, "
        "ratio 1.11; PSS MiB gateway 1,050, infinity 950, ratio 1.11"
    )
    assert compare_tables([r for r in results if r["target"] == "gateway"]) == ""  # no peer, no table


def test_rounds_take_turns_so_a_drift_favours_no_target() -> None:
    assert turns(("gateway", "infinity"), 3) == [
        (1, "gateway"),
        (1, "infinity"),
        (2, "infinity"),
        (2, "gateway"),
        (3, "gateway"),
        (3, "infinity"),
    ]
    assert turns(("gateway",), 2) == [(1, "gateway"), (2, "gateway")]
    assert settings().rounds == 1 and settings("--rounds", "5").rounds == 5
    with pytest.raises(ValidationError, match="rounds"):
        settings("--rounds", "0")


def test_over_rounds_the_table_gives_medians_and_the_median_of_the_paired_ratios() -> None:
    # the machine slows down over the run: round 2 is half as fast for both, round 3 the peer is lucky
    speeds = [(1, 4.0, 2.0), (2, 2.0, 1.0), (3, 3.0, 2.5)]
    results = []
    for number, ours, theirs in speeds:
        for target, rate in (("gateway", ours), ("infinity", theirs)):
            results.append({**result(target, 1, 32, rate, 100.0 * number, 300.0, 1000.0), "round": number})
    lines = compare_tables(results).splitlines()
    assert lines[0].startswith("gateway vs infinity, 3 rounds taking turns (medians over the rounds")
    assert lines[1].endswith("ratio  per round")
    row = lines[3].split()
    # texts/s medians 3.00 and 2.00, p50 medians 200; paired ratios 2.0, 2.0, 1.2: median 2.00, not 3.00/2.00
    assert row[-2:] == ["2.00", "1.20-2.00"]
    assert row[8:10] == ["3.00", "200"] and row[12] == "2.00"  # ours: texts/s, p50; theirs: texts/s
    table = format_table(results).splitlines()
    assert table[0].split()[:6] == ["target", "len", "n/req", "conc", "round", "reqs"]
    assert [line.split()[4] for line in table[2:]] == ["1", "1", "2", "2", "3", "3"]
    assert "round" not in format_table(results[:2]).splitlines()[0].split()  # one round: no column
    single = merged([results[0]])
    assert single is results[0]
    three = merged([r for r in results if r["target"] == "infinity"])
    assert three["rounds"] == 3 and three["throughput"]["texts_per_s"] == 2.0 and three["round"] is None


def test_footprint_counts_the_listener_and_its_children(peer: tuple[str, int]) -> None:
    _, port = peer
    measured = footprint.measure([port])
    assert measured.ports == (port,) and len(measured.processes) == 2  # the peer and its child
    assert measured.rss_mib is not None and measured.rss_mib >= BALLAST_MIB + CHILD_BALLAST_MIB
    assert measured.pss_mib is not None and 0 < measured.pss_mib <= measured.rss_mib
    largest = measured.processes[0]
    assert largest.rss_mib >= BALLAST_MIB and largest.name.startswith("python")
    nothing = footprint.measure([free_port()])
    assert (nothing.rss_mib, nothing.pss_mib, nothing.processes) == (None, None, [])


def run_bench(*flags: str, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bge_deploy.bench", *flags, "--no-progress", "--output-dir", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_bench_loads_a_peer_alone_and_reports_its_memory(peer: tuple[str, int], tmp_path: Path) -> None:
    url, port = peer
    flags = ["--model-dir", str(require_bge_assets()), "--target", "none", "--peers", f"fake={url}"]
    flags += ["--no-baseline", "--concurrency", "1,4", "--texts-per-request", "4", "--requests", "12"]
    ran = run_bench(*flags, "--peer-model", "peer-model", out=tmp_path)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    document = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert document["meta"]["peers"] == {"fake": url} and document["meta"]["targets"] == ["fake"]
    assert [(s["target"], s["concurrency"]) for s in document["scenarios"]] == [("fake", 1), ("fake", 4)]
    for scenario in document["scenarios"]:
        assert scenario["throughput"]["requests"] == 12 and scenario["throughput"]["errors"] == 0
        assert scenario["server"] is None  # Triton's counters are not a peer's
        memory = scenario["memory"]
        assert memory["ports"] == [port] and memory["rss_mib"] >= BALLAST_MIB + CHILD_BALLAST_MIB
    assert (tmp_path / "throughput.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_refuses_a_peer_that_does_not_answer(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    flags = ["--model-dir", str(require_bge_assets()), "--target", "none", "--peers", f"infinity={dead}"]
    ran = run_bench(*flags, "--no-baseline", out=tmp_path)
    assert ran.returncode == 1
    assert f"peer infinity {dead} is not reachable" in ran.stderr and "base URL the openai SDK's" in ran.stderr


def test_bench_refuses_a_remote_peer_unless_allowed(tmp_path: Path) -> None:
    flags = ["--model-dir", str(require_bge_assets()), "--target", "none", "--peers", "far=http://192.0.2.1:7997"]
    ran = run_bench(*flags, "--no-baseline", out=tmp_path)
    assert ran.returncode == 2 and "192.0.2.1" in ran.stderr
