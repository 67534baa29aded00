"""One benchmark run: the scenarios (target x lengths x texts per request x concurrency), each against
its in-process baseline, and the run's metadata."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bge_deploy.bench import footprint
from bge_deploy.bench.baseline import BaselineResult, load_encoder, run_baseline
from bge_deploy.bench.drivers import Driver, GatewayDriver, TritonDriver, port_of, run_load, warm_up
from bge_deploy.bench.measure import ratio, summarize
from bge_deploy.bench.server_stats import MetricsScraper, ServerStats
from bge_deploy.bench.settings import TARGETS, BenchSettings
from bge_deploy.bench.workload import Workload, build_workload, load_model_tokenizer


@dataclass(frozen=True)
class Endpoints:
    """Where the scenarios send load; `gateway_url` is None when there is no gateway to load."""

    targets: tuple[str, ...]
    triton_grpc_url: str
    triton_metrics_url: str
    gateway_url: str | None
    peers: dict[str, str] = field(default_factory=dict)  # name -> OpenAI base URL

    def ports(self, target: str) -> set[int]:
        """The listening ports of the processes that serve `target` (whose memory is its footprint)."""
        triton = {port_of(self.triton_grpc_url)}
        if target == "gateway":
            return triton | ({port_of(self.gateway_url)} if self.gateway_url else set())
        if target == "triton":
            return triton
        return {port_of(self.peers[target])}


@dataclass(frozen=True)
class Scenario:
    target: str
    workload: Workload
    texts_per_request: int
    concurrency: int
    round: int = 1


def turns(targets: tuple[str, ...], rounds: int) -> list[tuple[int, str]]:
    """(round, target) in the order they run: the targets in turn, every other round reversed (A B, B A, A B),
    so a drift in the machine's speed during a workload favours no target."""
    order = []
    for number in range(1, rounds + 1):
        order += [(number, target) for target in (targets if number % 2 else targets[::-1])]
    return order


class Progress:
    """tqdm bar per scenario (stderr); a no-op when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def bar(self, description: str, total: int | None) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc=description, unit="req", disable=not self.enabled, leave=False)

    def write(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)


def make_driver(args: BenchSettings, endpoints: Endpoints, target: str, concurrency: int) -> Driver:
    if target == "gateway":
        assert endpoints.gateway_url is not None
        return GatewayDriver(
            endpoints.gateway_url,
            args.gateway_model or args.model_name,
            concurrency,
            encoding_format=args.encoding_format,
            api_key=args.gateway_api_key,
        )
    if target in endpoints.peers:
        return GatewayDriver(
            endpoints.peers[target],
            args.peer_model or args.gateway_model or args.model_name,
            concurrency,
            encoding_format=args.encoding_format,
            target=target,
            path="/embeddings",
        )
    return TritonDriver(endpoints.triton_grpc_url, args.model_name)


async def run_scenario(
    args: BenchSettings,
    endpoints: Endpoints,
    scenario: Scenario,
    scraper: MetricsScraper,
    on_done: Callable[[], None],
) -> dict[str, Any]:
    requests = scenario.workload.requests(scenario.texts_per_request)
    driver = make_driver(args, endpoints, scenario.target, scenario.concurrency)
    own = scenario.target in TARGETS  # Triton's counters say what the project's encoder did, not a peer
    try:
        # later rounds find the server warm (the same shapes ran in round 1)
        default = max(scenario.concurrency, 2) if scenario.round == 1 else 0
        warmup = args.warmup if args.warmup is not None else default
        await warm_up(driver, requests, warmup, scenario.concurrency)
        before = scraper.scrape() if own else None
        record = await run_load(driver, requests, scenario.concurrency, args.requests, args.duration, on_done)
        after = scraper.scrape() if own else None
    finally:
        await driver.close()
    throughput = summarize(record)
    memory = footprint.measure(endpoints.ports(scenario.target)) if args.memory else None
    stats = ServerStats.between(before, after) if before and after else None
    notes = []
    if record.reported_tokens is not None and record.reported_tokens != record.tokens:
        notes.append(f"server counted {record.reported_tokens} tokens, the workload {record.tokens}")
    if stats is None and own:
        notes.append(f"no metrics from {scraper.url}")
    if memory is not None and memory.rss_mib is None:
        notes.append(f"nothing listens on ports {', '.join(map(str, memory.ports))}: memory not measured")
    return {
        "target": scenario.target,
        "lengths": scenario.workload.spec.label,
        "mean_tokens": scenario.workload.mean_tokens,
        "texts_per_request": scenario.texts_per_request,
        "concurrency": scenario.concurrency,
        "round": scenario.round,
        "throughput": asdict(throughput),
        "server": stats.to_dict() if stats else None,
        "memory": memory.to_dict() if memory else None,
        "first_error": record.first_error,
        "notes": notes,
    }


def attach_baseline(result: dict[str, Any], baseline: tuple[BaselineResult, BaselineResult] | None) -> None:
    served = result["throughput"]["texts_per_s"]
    if baseline is None:
        result.update(baseline=None, ratio=None, ratio_sorted=None)
        return
    as_requests, offline = baseline
    result["baseline"] = {"as_requests": asdict(as_requests), "offline_sorted": asdict(offline)}
    result["ratio"] = ratio(served, as_requests.texts_per_s)
    result["ratio_sorted"] = ratio(served, offline.texts_per_s)


def preflight(endpoints: Endpoints, args: BenchSettings) -> list[str]:
    """Problems that would make every request fail, said before any load is sent."""
    import urllib.request

    problems = []
    if "gateway" in endpoints.targets and endpoints.gateway_url:
        try:
            with urllib.request.urlopen(endpoints.gateway_url.rstrip("/") + "/health", timeout=5) as response:
                if response.status != 200:
                    problems.append(f"gateway {endpoints.gateway_url}/health answered {response.status}")
        except OSError as exc:
            problems.append(f"gateway {endpoints.gateway_url} is not reachable ({exc})")
    for name, url in endpoints.peers.items():
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=5) as response:
                if response.status != 200:
                    problems.append(f"peer {name} {url}/models answered {response.status}")
        except OSError as exc:
            problems.append(f"peer {name} {url} is not reachable ({exc}); is its base URL the openai SDK's?")
    if "triton" in endpoints.targets:
        import tritonclient.grpc as grpcclient

        try:
            client = grpcclient.InferenceServerClient(endpoints.triton_grpc_url)
            if not client.is_model_ready(args.model_name, client_timeout=5):
                problems.append(f"Triton {endpoints.triton_grpc_url} has no ready model '{args.model_name}'")
            client.close()
        except Exception as exc:
            problems.append(f"Triton {endpoints.triton_grpc_url} is not reachable ({exc})")
    return problems


def run_all(args: BenchSettings, endpoints: Endpoints, notes: list[str]) -> list[dict[str, Any]]:
    progress = Progress(args.progress)
    tokenizer = load_model_tokenizer(args.model_dir)
    scraper = MetricsScraper(endpoints.triton_metrics_url, args.model_name)
    encode = None
    if args.baseline:
        progress.write(f"bge-bench: loading the in-process baseline from {args.model_dir} (threads={args.threads})")
        encode = load_encoder(args.model_dir, args.threads)
    results = []
    for spec in args.lengths:
        workload = build_workload(tokenizer, spec, args.pool_size, args.seed)
        for per_request in args.texts_per_request:
            baseline = None
            if encode is not None:
                progress.write(f"bge-bench: baseline, {spec.label} tokens, {per_request} per batch")
                lengths_of = dict(zip(workload.texts, workload.lengths, strict=True))
                baseline = run_baseline(
                    encode,
                    workload.requests(per_request),
                    lengths_of,
                    args.threads,
                    args.sorted_batch_size,
                    args.baseline_seconds,
                )
            for concurrency in args.concurrency:
                for number, target in turns(endpoints.targets, args.rounds):
                    scenario = Scenario(target, workload, per_request, concurrency, number)
                    description = f"{target} len={spec.label} n/req={per_request} c={concurrency}"
                    if args.rounds > 1:
                        description += f" round {number}/{args.rounds}"
                    with progress.bar(description, args.requests) as bar:
                        result = asyncio.run(run_scenario(args, endpoints, scenario, scraper, lambda b=bar: b.update()))
                    attach_baseline(result, baseline)
                    tput = result["throughput"]
                    progress.write(
                        f"bge-bench: {description}: {tput['texts_per_s']:.1f} texts/s, p99 {tput['p99_ms']:.1f} ms"
                        + (f", {tput['errors']} errors (first: {result['first_error']})" if tput["errors"] else "")
                    )
                    results.append(result)
    return results


def describe_meta(args: BenchSettings, endpoints: Endpoints, notes: list[str]) -> dict[str, Any]:
    import torch

    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model_dir": str(args.model_dir),
        "model_name": args.model_name,
        "targets": list(endpoints.targets),
        "gateway_url": endpoints.gateway_url,
        "peers": endpoints.peers,
        "peer_model": args.peer_model,
        "triton_grpc_url": endpoints.triton_grpc_url,
        "triton_metrics_url": endpoints.triton_metrics_url,
        "self_contained": args.self_contained,
        "precision": args.precision.value if args.self_contained else None,
        "threads": args.threads,
        "duration_s": args.duration,
        "requests": args.requests,
        "pool_size": args.pool_size,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "baseline_seconds": args.baseline_seconds if args.baseline else None,
        "sorted_batch_size": args.sorted_batch_size,
        "max_batch_size": args.max_batch_size if args.self_contained else None,
        "encoding_format": args.encoding_format,
        "host": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "notes": notes,
    }
