"""Results out: a table on stdout, a JSON file, and a PNG of throughput and p99 latency vs concurrency."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Result = dict[str, Any]

COLUMNS = (
    ("target", "target"),
    ("len", "lengths"),
    ("n/req", "texts_per_request"),
    ("conc", "concurrency"),
    ("reqs", "throughput.requests"),
    ("err", "throughput.errors"),
    ("texts/s", "throughput.texts_per_s"),
    ("tokens/s", "throughput.tokens_per_s"),
    ("p50 ms", "throughput.p50_ms"),
    ("p90 ms", "throughput.p90_ms"),
    ("p99 ms", "throughput.p99_ms"),
    ("enc batch", "server.mean_encoder_batch"),
    ("padding", "server.padding_ratio"),
    ("queue ms", "server.encoder_queue_ms"),
    ("base t/s", "baseline.as_requests.texts_per_s"),
    ("ratio", "ratio"),
    ("sorted t/s", "baseline.offline_sorted.texts_per_s"),
    ("ratio s", "ratio_sorted"),
    ("RSS MiB", "memory.rss_mib"),
    ("PSS MiB", "memory.pss_mib"),
)


def lookup(result: Result, path: str) -> Any:
    """`"a.b.c"` -> result["a"]["b"]["c"], None where any step is missing."""
    value: Any = result
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    return str(value)


def format_table(results: Sequence[Result]) -> str:
    """A fixed-width table, one row per scenario (and round, with a round column where there were several)."""
    columns = COLUMNS
    if any(r.get("round", 1) > 1 for r in results):
        at = [path for _, path in COLUMNS].index("concurrency") + 1
        columns = (*COLUMNS[:at], ("round", "round"), *COLUMNS[at:])
    header = [title for title, _ in columns]
    rows = [[cell(lookup(r, path)) for _, path in columns] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


OURS = ("gateway", "triton")  # what the peers are compared with, the first one present


def workload_label(result: Result) -> str:
    """`"1 client x 32 texts x 64 tokens"`, the words the issues and BENCHMARKS.md use."""
    clients = result["concurrency"]
    texts = result["texts_per_request"]
    return (
        f"{clients} client{'s' if clients != 1 else ''} x {texts} text{'s' if texts != 1 else ''} x "
        f"{result['lengths']} tokens"
    )


def _rate_cells(result: Result | None) -> list[str]:
    if result is None:
        return ["n/a"] * 4
    p50, p99 = lookup(result, "throughput.p50_ms"), lookup(result, "throughput.p99_ms")
    spread = p99 / p50 if p50 and p99 is not None and not math.isnan(p50) and not math.isnan(p99) else None
    return [cell(lookup(result, "throughput.texts_per_s")), cell(p50), cell(p99), cell(spread)]


Key = tuple[str, str, int, int]  # target, lengths, texts per request, concurrency


def rounds_of(results: Sequence[Result]) -> dict[Key, list[Result]]:
    """Each scenario's results, round after round, scenarios in the order they first ran."""
    grouped: dict[Key, list[Result]] = {}
    for r in results:
        grouped.setdefault((r["target"], r["lengths"], r["texts_per_request"], r["concurrency"]), []).append(r)
    return {key: sorted(rows, key=lambda r: r.get("round", 1)) for key, rows in grouped.items()}


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    return statistics.median(numbers) if numbers else None


def merged(rows: Sequence[Result]) -> Result:
    """One result for a scenario measured over several rounds: each throughput figure's median."""
    if len(rows) == 1:
        return rows[0]
    keys = rows[0]["throughput"].keys()
    throughput = {key: _median([r["throughput"].get(key) for r in rows]) for key in keys}
    return {**rows[0], "round": None, "rounds": len(rows), "throughput": throughput}


def paired_ratios(mine: Sequence[Result], theirs: Sequence[Result]) -> list[float]:
    """Round by round, our texts/s over the peer's: each pair ran back to back, so a drift of the machine's
    speed moves both."""
    rate = {r.get("round", 1): lookup(r, "throughput.texts_per_s") for r in theirs}
    return [
        served / rate[r.get("round", 1)]
        for r in mine
        if (served := lookup(r, "throughput.texts_per_s")) is not None and rate.get(r.get("round", 1))
    ]


def peak_memory(results: Sequence[Result], target: str, key: str) -> float | None:
    """The largest `memory.<key>` (rss_mib / pss_mib) measured after any of `target`'s scenarios."""
    values = [lookup(r, f"memory.{key}") for r in results if r["target"] == target]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def compare_tables(results: Sequence[Result]) -> str:
    """The project against each peer, workload by workload (same run, same machine): texts/s, p50, p99,
    p99/p50 of each and the throughput ratio; then the served memory of each after the load.
    Measured over several rounds (--rounds), each figure is the median over the rounds and the ratio the
    median of the per-round ratios, their range beside it. Empty when the run had no peer."""
    targets = list(dict.fromkeys(r["target"] for r in results))
    ours = next((t for t in OURS if t in targets), None)
    peers = [t for t in targets if t not in OURS]
    if ours is None or not peers:
        return ""
    grouped = rounds_of(results)
    workloads = list(dict.fromkeys(key[1:] for key in grouped))
    rounds = max(len(rows) for rows in grouped.values())
    blocks = []
    for peer in peers:
        header = ["workload", *(f"{ours} {h}" for h in ("texts/s", "p50", "p99", "p99/p50"))]
        header += [*(f"{peer} {h}" for h in ("texts/s", "p50", "p99", "p99/p50")), "ratio"]
        header += ["per round"] if rounds > 1 else []
        rows = []
        for key in workloads:
            mine, theirs = grouped.get((ours, *key), []), grouped.get((peer, *key), [])
            if not mine and not theirs:
                continue
            ratios = paired_ratios(mine, theirs)
            label = workload_label((mine or theirs)[0])
            row = [
                label,
                *_rate_cells(merged(mine) if mine else None),
                *_rate_cells(merged(theirs) if theirs else None),
            ]
            row.append(cell(_median(ratios)))
            if rounds > 1:
                row.append(f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "n/a")
            rows.append(row)
        memory = []
        for key, title in (("rss_mib", "RSS"), ("pss_mib", "PSS")):
            a, b = peak_memory(results, ours, key), peak_memory(results, peer, key)
            if a is not None or b is not None:
                quotient = a / b if a is not None and b else None
                memory.append(f"{title} MiB {ours} {cell(a)}, {peer} {cell(b)}, ratio {cell(quotient)}")
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
        if rounds > 1:
            title = (
                f"{ours} vs {peer}, {rounds} rounds taking turns (medians over the rounds, latencies in ms; "
                f"ratio = median of the per-round {ours} texts/s / {peer} texts/s)"
            )
        else:
            title = f"{ours} vs {peer} (latencies in ms; ratio = {ours} texts/s / {peer} texts/s)"
        lines = [title, "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        if memory:
            lines.append("served memory after load (largest over the scenarios): " + "; ".join(memory))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def json_safe(value: Any) -> Any:
    """NaN/inf (no latency when every request failed) are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, meta: dict[str, Any], results: Sequence[Result]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = json_safe({"meta": meta, "scenarios": list(results)})
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def write_plot(path: Path, results: Sequence[Result], title: str = "") -> Path | None:
    """One row per workload (token lengths, texts per request): texts/s and p99 latency against
    concurrency, a line per target (medians where there were several rounds), the in-process baselines as
    horizontal lines. None if no results."""
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    workloads: dict[tuple[str, int], dict[str, list[Result]]] = {}
    for r in (merged(rows) for rows in rounds_of(results).values()):
        workloads.setdefault((r["lengths"], r["texts_per_request"]), {}).setdefault(r["target"], []).append(r)
    fig, axes = plt.subplots(len(workloads), 2, figsize=(12, 3.8 * len(workloads)), squeeze=False)
    for (ax_tput, ax_p99), ((lengths, per_request), targets) in zip(axes, workloads.items(), strict=True):
        levels = sorted({r["concurrency"] for rows in targets.values() for r in rows})
        for target, rows in sorted(targets.items()):
            rows = sorted(rows, key=lambda r: r["concurrency"])
            x = [r["concurrency"] for r in rows]
            ax_tput.plot(x, [lookup(r, "throughput.texts_per_s") for r in rows], marker="o", label=target)
            p99 = [lookup(r, "throughput.p99_ms") for r in rows]
            ax_p99.plot(x, [math.nan if v is None else v for v in p99], marker="o", label=target)
        first = next(iter(targets.values()))[0]
        for variant, style, name in (
            ("as_requests", "--", "in-process, same batches"),
            ("offline_sorted", ":", "in-process, sorted batches"),
        ):
            rate = lookup(first, f"baseline.{variant}.texts_per_s")
            if rate:
                ax_tput.axhline(rate, linestyle=style, color="grey", linewidth=1.2, label=name)
        ax_tput.set_title(f"{lengths} tokens, {per_request} text(s) per request", fontsize=9)
        ax_p99.set_title(f"{lengths} tokens, {per_request} text(s) per request", fontsize=9)
        for ax in (ax_tput, ax_p99):
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(levels))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([str(c) for c in levels])
            ax.set_xlabel("concurrency (requests in flight)")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        ax_tput.set_ylabel("texts / s")
        ax_p99.set_ylabel("p99 latency (ms)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
