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
  bge-bench --model-dir DIR --target gateway --peers infinity=http://127.0.0.1:7997 --rounds 5 --duration 20

With --peers, a second table puts each peer beside the project, workload by workload. With --rounds N every
scenario runs N times, the targets taking turns (A B, B A, A B, ...): on a machine whose speed drifts (a
shared cloud VM can move by a third within half an hour) one back-to-back pair is a fair comparison where
two runs minutes apart are not; the table gives the median of the per-round ratios and their range.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from bge_deploy.bench.drivers import check_targets
from bge_deploy.bench.random_model import WEIGHT_FILES
from bge_deploy.bench.report import compare_tables, format_table, write_json, write_plot
from bge_deploy.bench.scenarios import Endpoints, describe_meta, preflight, run_all
from bge_deploy.bench.settings import BenchSettings
from bge_model_repository.logs import configure_logging

log = logging.getLogger("bge-bench")


def finish(args: BenchSettings, endpoints: Endpoints, notes: list[str], results: list[dict[str, Any]]) -> None:
    meta = describe_meta(args, endpoints, notes)
    print(format_table(results))
    comparison = compare_tables(results)
    if comparison:
        print()
        print(comparison)
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
    try:
        args = BenchSettings.from_cli(argv)
    except ValidationError as exc:
        log.error("%s", exc)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configure_logging()
    if not (args.model_dir / "tokenizer.json").is_file():
        log.error(f"{args.model_dir} has no tokenizer.json (--model-dir is a local model directory)")
        return 2
    needs_weights = args.self_contained or args.baseline
    if needs_weights and not any((args.model_dir / name).is_file() for name in WEIGHT_FILES):
        log.error(
            f"{args.model_dir} has no weights ({' / '.join(WEIGHT_FILES)}), which the baseline and "
            "--self-contained need. For a stand-in of the exact shape: python -m bge_deploy.bench.random_model "
            f"--config {args.model_dir} --out DIR (or pass --no-baseline against a running server)"
        )
        return 2
    targets = args.targets
    notes: list[str] = []
    try:
        check_targets(list(args.peers.values()), args.allow_remote)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if args.self_contained:
        from bge_deploy.bench.local_stack import LocalStack, StackSettings

        settings = StackSettings(
            model_dir=args.model_dir,
            name=args.model_name,
            precision=args.precision.value,
            max_batch_size=args.max_batch_size,
            threads=args.threads,
            parity=args.parity,
            gateway="gateway" in targets,
            keep=args.keep,
        )
        with LocalStack(settings) as stack:
            notes += stack.notes
            if stack.gateway_url is None:
                targets = tuple(t for t in targets if t != "gateway")
            if not targets:
                log.error("nothing to benchmark: %s", "; ".join(notes))
                return 1
            endpoints = Endpoints(targets, stack.grpc_url, stack.metrics_url, stack.gateway_url, args.peers)
            notes.append(f"self-contained: {args.precision.value} encoder, onnxruntime threads={args.threads}")
            problems = preflight(Endpoints((), "", "", None, args.peers), args)
            if problems:
                log.error("%s", "; ".join(problems))
                return 1
            results = run_all(args, endpoints, notes)
            if args.keep:
                notes.append(f"logs and repository kept in {stack.root}")
    else:
        endpoints = Endpoints(targets, args.triton_grpc_url, args.triton_metrics_url, args.gateway_url, args.peers)
        urls = [endpoints.triton_grpc_url, endpoints.triton_metrics_url] + (
            [args.gateway_url] if "gateway" in targets else []
        )
        try:
            check_targets(urls, args.allow_remote)
        except ValueError as exc:
            log.error("%s", exc)
            return 2
        problems = preflight(endpoints, args)
        if problems:
            log.error("%s", "; ".join(problems))
            return 1
        notes.append("server threads are whatever its export set (bge-export --intra-op-threads)")
        results = run_all(args, endpoints, notes)
    finish(args, endpoints, notes, results)
    return 0 if all(r["throughput"]["requests"] > 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
