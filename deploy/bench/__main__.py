"""`bge-bench` / `python -m bge_deploy.bench`: served throughput against the in-process baseline.

For every scenario (target x token lengths x texts per request x concurrency), closed-loop load
(each of C workers sends its next request when the last one answered), then one table row:

  texts/s, tokens/s      completed texts (tokens incl. [CLS]/[SEP]) over the run's wall time
  p50/p90/p99 ms         latency of successful requests, as the client saw it
  enc batch, padding     from Triton's metrics before/after: texts per encoder run, computed/real tokens
  queue ms               mean wait of a request in the encoder's queue
  base t/s, sorted t/s   the same texts in this process (sentence-transformers, --threads torch threads):
                         in the same batches, and sorted by length in batches of --sorted-batch-size
  ratio, ratio s         served texts/s over each baseline

Results also go to OUTPUT_DIR/results.json and OUTPUT_DIR/throughput.png. Server-side numbers are the
whole server's: other traffic during a run shows up in them.

  bge-bench --model-dir DIR --target both --concurrency 1,8,32 --lengths 64,8-512 --duration 20
  bge-bench --self-contained --model-dir DIR --precision int8 --target triton --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bge_deploy.bench.baseline import BaselineResult, load_encoder, run_baseline
from bge_deploy.bench.drivers import Driver, GatewayDriver, TritonDriver, check_targets, run_load, warm_up
from bge_deploy.bench.measure import ratio, summarize
from bge_deploy.bench.random_model import WEIGHT_FILES
from bge_deploy.bench.report import format_table, write_json, write_plot
from bge_deploy.bench.server_stats import MetricsScraper, ServerStats
from bge_deploy.bench.workload import LengthSpec, Workload, WorkloadError, build_workload, load_model_tokenizer
from bge_model_repository.contract import DEFAULT_MODEL

TARGETS = ("gateway", "triton")
DEFAULT_DURATION_S = 10.0


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' needs positive integers")
    return values


def length_list(text: str) -> list[LengthSpec]:
    try:
        return [LengthSpec.parse(part) for part in text.split(",") if part.strip()]
    except WorkloadError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="bge-bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    load = p.add_argument_group("load")
    load.add_argument("--target", choices=(*TARGETS, "both"), default="both", help="what to load (default both)")
    load.add_argument("--concurrency", type=int_list, default=[1, 8, 32], help="requests in flight, e.g. 1,8,32")
    load.add_argument(
        "--lengths",
        type=length_list,
        default=[LengthSpec(64, 64)],
        help="tokens per text incl. [CLS]/[SEP]: N (fixed) or A-B (uniform); several separated by commas (default 64)",
    )
    load.add_argument("--texts-per-request", type=int_list, default=[1], help="texts in one request, e.g. 1,16")
    load.add_argument("--duration", type=float, help=f"seconds per scenario (default {DEFAULT_DURATION_S:g})")
    load.add_argument("--requests", type=int, help="requests per scenario (with --duration: whichever ends first)")
    load.add_argument("--warmup", type=int, help="unrecorded requests before each scenario (default: concurrency)")
    load.add_argument("--pool-size", type=int, default=512, help="distinct texts per length spec (default 512)")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument(
        "--encoding-format",
        choices=("base64", "float"),
        default="base64",
        help="gateway response format (the openai SDK asks for base64)",
    )
    load.add_argument("--allow-remote", action="store_true", help="allow targets that are not loopback addresses")

    server = p.add_argument_group("server")
    server.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="HF model directory with weights: tokenizer for the texts, weights for the baseline",
    )
    server.add_argument("--model-name", default=DEFAULT_MODEL, help=f"Triton ensemble name (default {DEFAULT_MODEL})")
    server.add_argument("--gateway-model", help="`model` sent to the gateway (default: --model-name)")
    server.add_argument("--gateway-url", default=env("BGE_BENCH_GATEWAY_URL", "http://127.0.0.1:30000"))
    server.add_argument("--gateway-api-key", default=env("BGE_BENCH_API_KEY"), help="env BGE_BENCH_API_KEY")
    server.add_argument("--triton-grpc-url", default=env("BGE_BENCH_TRITON_GRPC_URL", "127.0.0.1:8001"))
    server.add_argument(
        "--triton-metrics-url", default=env("BGE_BENCH_TRITON_METRICS_URL", "http://127.0.0.1:8002/metrics")
    )

    base = p.add_argument_group("in-process baseline")
    base.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads of the baseline (and onnxruntime threads with --self-contained)",
    )
    base.add_argument("--no-baseline", action="store_true", help="skip the in-process baseline")
    base.add_argument("--baseline-seconds", type=float, default=20.0, help="time bound of each baseline variant")
    base.add_argument("--sorted-batch-size", type=int, default=32, help="batch of the offline sorted baseline")

    stack = p.add_argument_group("--self-contained: export and serve the model in a temporary folder")
    stack.add_argument("--self-contained", action="store_true")
    stack.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    stack.add_argument("--max-batch-size", type=int, default=64)
    stack.add_argument("--no-parity", action="store_true", help="skip the exporter's parity gate")
    stack.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, repository)")

    out = p.add_argument_group("output")
    out.add_argument("--output-dir", type=Path, default=Path("build/bench"), help="results.json, throughput.png")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.duration is None and args.requests is None:
        args.duration = DEFAULT_DURATION_S
    if (args.duration is not None and args.duration <= 0) or (args.requests is not None and args.requests < 1):
        p.error("--duration and --requests must be positive")
    if args.threads < 1 or args.pool_size < 1 or args.sorted_batch_size < 1:
        p.error("--threads, --pool-size and --sorted-batch-size must be positive")
    return args


@dataclass(frozen=True)
class Endpoints:
    """Where the scenarios send load; `gateway_url` is None when there is no gateway to load."""

    targets: tuple[str, ...]
    triton_grpc_url: str
    triton_metrics_url: str
    gateway_url: str | None


@dataclass(frozen=True)
class Scenario:
    target: str
    workload: Workload
    texts_per_request: int
    concurrency: int


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


def make_driver(args: argparse.Namespace, endpoints: Endpoints, target: str, concurrency: int) -> Driver:
    if target == "gateway":
        assert endpoints.gateway_url is not None
        return GatewayDriver(
            endpoints.gateway_url,
            args.gateway_model or args.model_name,
            concurrency,
            encoding_format=args.encoding_format,
            api_key=args.gateway_api_key,
        )
    return TritonDriver(endpoints.triton_grpc_url, args.model_name)


async def run_scenario(
    args: argparse.Namespace,
    endpoints: Endpoints,
    scenario: Scenario,
    scraper: MetricsScraper,
    on_done: Callable[[], None],
) -> dict[str, Any]:
    requests = scenario.workload.requests(scenario.texts_per_request)
    driver = make_driver(args, endpoints, scenario.target, scenario.concurrency)
    try:
        warmup = args.warmup if args.warmup is not None else max(scenario.concurrency, 2)
        await warm_up(driver, requests, warmup, scenario.concurrency)
        before = scraper.scrape()
        record = await run_load(driver, requests, scenario.concurrency, args.requests, args.duration, on_done)
        after = scraper.scrape()
    finally:
        await driver.close()
    throughput = summarize(record)
    stats = ServerStats.between(before, after) if before and after else None
    notes = []
    if record.reported_tokens is not None and record.reported_tokens != record.tokens:
        notes.append(f"server counted {record.reported_tokens} tokens, the workload {record.tokens}")
    if stats is None:
        notes.append(f"no metrics from {scraper.url}")
    return {
        "target": scenario.target,
        "lengths": scenario.workload.spec.label,
        "mean_tokens": scenario.workload.mean_tokens,
        "texts_per_request": scenario.texts_per_request,
        "concurrency": scenario.concurrency,
        "throughput": asdict(throughput),
        "server": stats.to_dict() if stats else None,
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


def preflight(endpoints: Endpoints, args: argparse.Namespace) -> list[str]:
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


def run_all(args: argparse.Namespace, endpoints: Endpoints, notes: list[str]) -> list[dict[str, Any]]:
    progress = Progress(not args.no_progress)
    tokenizer = load_model_tokenizer(args.model_dir)
    scraper = MetricsScraper(endpoints.triton_metrics_url, args.model_name)
    encode = None
    if not args.no_baseline:
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
            for target in endpoints.targets:
                for concurrency in args.concurrency:
                    scenario = Scenario(target, workload, per_request, concurrency)
                    description = f"{target} len={spec.label} n/req={per_request} c={concurrency}"
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


def describe_meta(args: argparse.Namespace, endpoints: Endpoints, notes: list[str]) -> dict[str, Any]:
    import torch

    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model_dir": str(args.model_dir),
        "model_name": args.model_name,
        "targets": list(endpoints.targets),
        "gateway_url": endpoints.gateway_url,
        "triton_grpc_url": endpoints.triton_grpc_url,
        "triton_metrics_url": endpoints.triton_metrics_url,
        "self_contained": args.self_contained,
        "precision": args.precision if args.self_contained else None,
        "threads": args.threads,
        "duration_s": args.duration,
        "requests": args.requests,
        "pool_size": args.pool_size,
        "warmup": args.warmup,
        "baseline_seconds": None if args.no_baseline else args.baseline_seconds,
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


def finish(args: argparse.Namespace, endpoints: Endpoints, notes: list[str], results: list[dict[str, Any]]) -> None:
    meta = describe_meta(args, endpoints, notes)
    print(format_table(results))
    for note in notes:
        print(f"note: {note}")
    for r in results:
        for note in r["notes"]:
            print(f"note ({r['target']}, {r['lengths']}, c={r['concurrency']}): {note}")
    json_path = write_json(args.output_dir / "results.json", meta, results)
    title = f"{args.model_name} ({args.model_dir.name}), baseline threads={args.threads}"
    plot_path = write_plot(args.output_dir / "throughput.png", results, title)
    print(f"results: {json_path}" + (f", plot: {plot_path}" if plot_path else ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bge_deploy.bench").setLevel(logging.INFO)
    if not (args.model_dir / "tokenizer.json").is_file():
        print(
            f"bge-bench: {args.model_dir} has no tokenizer.json (--model-dir is a local model directory)",
            file=sys.stderr,
        )
        return 2
    needs_weights = args.self_contained or not args.no_baseline
    if needs_weights and not any((args.model_dir / name).is_file() for name in WEIGHT_FILES):
        print(
            f"bge-bench: {args.model_dir} has no weights ({' / '.join(WEIGHT_FILES)}), which the baseline and "
            "--self-contained need. For a stand-in of the exact shape: python -m bge_deploy.bench.random_model "
            f"--config {args.model_dir} --out DIR (or pass --no-baseline against a running server)",
            file=sys.stderr,
        )
        return 2
    targets = TARGETS if args.target == "both" else (args.target,)
    notes: list[str] = []
    if args.self_contained:
        from bge_deploy.bench.local_stack import LocalStack, StackSettings

        settings = StackSettings(
            model_dir=args.model_dir,
            name=args.model_name,
            precision=args.precision,
            max_batch_size=args.max_batch_size,
            threads=args.threads,
            parity=not args.no_parity,
            gateway="gateway" in targets,
            keep=args.keep,
        )
        with LocalStack(settings) as stack:
            notes += stack.notes
            if stack.gateway_url is None:
                targets = tuple(t for t in targets if t != "gateway")
            if not targets:
                print(f"bge-bench: nothing to benchmark: {'; '.join(notes)}", file=sys.stderr)
                return 1
            endpoints = Endpoints(targets, stack.grpc_url, stack.metrics_url, stack.gateway_url)
            notes.append(f"self-contained: {args.precision} encoder, onnxruntime threads={args.threads}")
            results = run_all(args, endpoints, notes)
            if args.keep:
                notes.append(f"logs and repository kept in {stack.root}")
    else:
        endpoints = Endpoints(targets, args.triton_grpc_url, args.triton_metrics_url, args.gateway_url)
        urls = [endpoints.triton_grpc_url, endpoints.triton_metrics_url] + (
            [args.gateway_url] if "gateway" in targets else []
        )
        try:
            check_targets(urls, args.allow_remote)
        except ValueError as exc:
            print(f"bge-bench: {exc}", file=sys.stderr)
            return 2
        problems = preflight(endpoints, args)
        if problems:
            print("bge-bench: " + "; ".join(problems), file=sys.stderr)
            return 1
        notes.append("server threads are whatever its export set (bge-export --intra-op-threads)")
        results = run_all(args, endpoints, notes)
    finish(args, endpoints, notes, results)
    return 0 if all(r["throughput"]["requests"] > 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
