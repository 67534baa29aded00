"""This CPU's fp32 matrix-multiply rate on an encoder's shapes, per engine: the ceiling a CPU encoder serves at.

    python -m bge_deploy.bench.gemm_ceiling --config ../shared/models/bge-large-zh-v1.5 --tokens 64
    python -m bge_deploy.bench.gemm_ceiling --hidden 384 --intermediate 1536 --rows 128,512 --threads 2

A BERT encoder is almost all of three multiplies per layer (hidden x hidden, hidden x intermediate and
back). For each of them at each row count (texts x tokens of a batch) this prints the GFLOP/s of
onnxruntime (the CPU encoder's engine) and, where installed, torch (what sentence-transformers and infinity
run) and OpenVINO, with `--threads` threads. With the model's cost per token it also prints what
that rate allows: texts/s per `--threads` threads at `--tokens` tokens. Compare it with `bge-bench`'s served
figure: when served is near it, no scheduling change serves more fp32 texts on this CPU, and two engines at
the same rate cannot be far apart (BENCHMARKS.md, run 17).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bge_model_repository.cpu import this_cpu
from bge_model_repository.logs import configure_logging

log = logging.getLogger("bge-bench")

Multiply = Callable[[], np.ndarray]
"""One timed multiply, returning its product (so a test can check it is the product)."""
Engine = Callable[[np.ndarray, np.ndarray, int], Multiply]


@dataclass(frozen=True)
class GemmRate:
    """One engine's rate multiplying (rows x k) by a constant (k x n)."""

    engine: str
    rows: int
    k: int
    n: int
    gflops: float


def flops_per_token(layers: int, hidden: int, intermediate: int, tokens: int) -> float:
    """Floating-point operations of one token through the encoder: per layer Q, K, V and output projections
    (4 h^2 multiply-adds), the feed-forward pair (2 h i), and attention over `tokens` positions (2 h t)."""
    return 2.0 * layers * (4 * hidden * hidden + 2 * hidden * intermediate + 2 * hidden * tokens)


def onnxruntime_engine(a: np.ndarray, b: np.ndarray, threads: int) -> Multiply:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = b.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        [numpy_helper.from_array(b, "w")],  # a constant, prepacked like the encoder's weights
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": a})[0]


def torch_engine(a: np.ndarray, b: np.ndarray, threads: int) -> Multiply:
    import torch

    torch.set_num_threads(threads)
    x, weight = torch.from_numpy(a), torch.from_numpy(np.ascontiguousarray(b.T))  # nn.Linear's layout
    return lambda: torch.nn.functional.linear(x, weight).numpy()


def openvino_engine(a: np.ndarray, b: np.ndarray, threads: int) -> Multiply:
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([-1, b.shape[0]], np.float32)
    model = ov.Model([ops.matmul(x, ops.constant(b), False, False)], [x])
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    return lambda: request.infer({0: a})[0]


ENGINES: dict[str, Engine] = {
    "onnxruntime": onnxruntime_engine,
    "torch": torch_engine,
    "openvino": openvino_engine,
}


def rate(multiply: Multiply, flops: float, seconds: float) -> float:
    """GFLOP/s of `multiply` over about `seconds` (after two warm-up calls)."""
    multiply()
    multiply()
    start = time.perf_counter()
    calls = 0
    while True:
        multiply()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return flops * calls / elapsed / 1e9


def measure(
    engines: Sequence[str], rows: Sequence[int], hidden: int, intermediate: int, threads: int, seconds: float
) -> list[GemmRate]:
    """One result per (rows, shape, engine); an engine that cannot be imported is skipped, saying so."""
    generator = np.random.default_rng(0)
    shapes = [(hidden, hidden), (hidden, intermediate), (intermediate, hidden)]
    results: list[GemmRate] = []
    missing: set[str] = set()
    for m in rows:
        for k, n in shapes:
            a = generator.standard_normal((m, k), dtype=np.float32)
            b = generator.standard_normal((k, n), dtype=np.float32) / np.sqrt(k, dtype=np.float32)
            for name in engines:
                if name in missing:
                    continue
                try:
                    multiply = ENGINES[name](a, b, threads)
                except ImportError as exc:
                    log.info("gemm ceiling: %s is not installed (%s); skipped", name, exc)
                    missing.add(name)
                    continue
                gflops = rate(multiply, 2.0 * m * k * n, seconds)
                results.append(GemmRate(name, m, k, n, gflops))
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bge_deploy.bench.gemm_ceiling", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="model dir (or config.json) to take the shapes and layers from")
    parser.add_argument("--hidden", type=int, default=1024, help="hidden size (without --config)")
    parser.add_argument("--intermediate", type=int, default=4096, help="feed-forward size (without --config)")
    parser.add_argument("--layers", type=int, default=24, help="layers (without --config)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per text, for the texts/s it allows")
    parser.add_argument("--rows", default="128,512,2048", help="rows of each multiply (texts x tokens of a batch)")
    parser.add_argument("--threads", type=int, default=1, help="threads of each engine (the encoder's lanes use 1)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, of " + ", ".join(ENGINES))
    args = parser.parse_args(argv)
    if args.config is not None:
        path = args.config / "config.json" if args.config.is_dir() else args.config
        config = json.loads(path.read_text())
        args.hidden, args.intermediate = config["hidden_size"], config["intermediate_size"]
        args.layers = config["num_hidden_layers"]
    try:
        args.rows = [int(r) for r in args.rows.split(",")]
    except ValueError:
        parser.error(f"--rows takes comma-separated whole numbers (e.g. 128,512), got {args.rows!r}")
    if min(args.rows) < 1 or args.threads < 1 or args.tokens < 1 or args.seconds <= 0:
        parser.error("--rows, --threads and --tokens must be at least 1 and --seconds above 0")
    unknown = set(args.engines.split(",")) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(sorted(unknown))}; choose from {', '.join(ENGINES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging("info")
    args = parse_args(argv)
    per_token = flops_per_token(args.layers, args.hidden, args.intermediate, args.tokens)
    log.info(
        "gemm ceiling: CPU %s, %d cores visible; %d thread(s) per engine; model %d layers, hidden %d, "
        "intermediate %d: %.3f GFLOP per token at %d tokens",
        this_cpu().describe(),
        os.cpu_count() or 0,
        args.threads,
        args.layers,
        args.hidden,
        args.intermediate,
        per_token / 1e9,
        args.tokens,
    )
    results = measure(args.engines.split(","), args.rows, args.hidden, args.intermediate, args.threads, args.seconds)
    print(f"{'rows x k x n':>18}  {'engine':<12} {'GFLOP/s':>8}  {'texts/s it allows':>17}")
    for r in results:
        allows = r.gflops * 1e9 / per_token / args.tokens
        shape = f"{r.rows}x{r.k}x{r.n}"
        print(f"{shape:>18}  {r.engine:<12} {r.gflops:>8.1f}  {allows:>17.2f}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
