"""GPU check, one command: the TensorRT FP16 engine built, served by Triton, checked and timed against PyTorch.

Run it inside NVIDIA's Triton image (exact command: deploy/README.md, "GPU check"):

    python -m bge_deploy.gpu_check --config ../shared/models/bge-large-zh-v1.5   # random weights, real shape
    python -m bge_deploy.gpu_check --model-dir /data/bge-large-zh-v1.5           # real weights

Steps:
1. export the plain ONNX (``bge-export --backend tensorrt``) and build the FP16 engine with optimization
   profiles batch 1..max x sequence 1..512 (``bge-build-engine``);
2. in process: the engine on the parity texts (1 to over 512 tokens) against PyTorch fp32 (min cosine
   >= 0.999), then batches of --batch texts of exactly 64/128/512 tokens timed through the engine and
   through PyTorch fp16 (SDPA) on the same GPU;
3. served: ``bge-triton`` (the deployed launcher, watchdog and all) on the exported repository with free
   loopback ports; through the ensemble over gRPC, the parity texts against the same fp32 reference, then
   closed-loop load (--concurrency requests of --texts-per-request texts, --duration s per length);
4. one table (served, engine and PyTorch texts/s, and the ratios) and a last line, PASS or FAIL.

Serving needs a Triton with the tensorrt backend: /opt/tritonserver in NVIDIA's image, or one named by
--triton-home / BGE_TRITON_HOME. Without one (NVIDIA's TensorRT image, say) step 3 is skipped with a note
and the exit code covers steps 1 and 2 only.

Exit code: 0 every check that ran passed; 1 a check failed (parity, failed requests, a server that did not
become ready); 2 nothing could run (no GPU, no CUDA build of torch, no ``tensorrt`` package).

Time on one H100, bge-large's shape: export about 1 min, engine build 1-3 min, in process under 1 min,
serving about 1 min (start-up, then 3 lengths x 10 s): about 5 min, well under 10.

``--cpu-dry-run`` runs the same steps, the same functions, on CPU with what the pip install has: export
``--backend python`` (fp32 onnxruntime), no engine build, onnxruntime on the exported graph as the
in-process engine, PyTorch fp32 as the baseline, served by the nvidia-pytriton wheel's Triton through the
same ``bge-triton``. Without --model-dir it makes a 2-layer random model with --config's tokenizer. It
checks the plumbing in well under a minute, not GPU speed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bge_deploy.bench.measure import Throughput
from bge_deploy.bench.workload import LengthSpec, Workload, WorkloadError, build_workload
from bge_deploy.launcher import SYSTEM_TRITON_HOME, TRITON_HOME_ENV, LauncherError, SystemTriton, find_triton
from bge_export.parity import PARITY_TEXTS, ParityError, ParityResult, check_parity
from bge_export.settings import PARITY_THRESHOLDS, Backend, Precision
from bge_export.tensorrt_engine import EngineBuildError, build_for_repository, require_gpu
from bge_export.triton_config import TOKENIZER_DIR
from bge_model_repository.contract import DEFAULT_MODEL
from bge_model_repository.encoder_runtime import token_batch_inputs
from bge_model_repository.tokenization import TokenBatch, load_tokenizer, tokenize

PARITY_MIN_COSINE = PARITY_THRESHOLDS[Precision.FP16]
"""Served and in-process vectors against PyTorch fp32: the fp16 export gate (0.999)."""
MODEL_NAME = DEFAULT_MODEL
"""The ensemble's name, as deployed."""
READY_LINE = "ready - HTTP"
"""What ``bge-triton`` prints once tritonserver and every model are ready."""


@dataclass(frozen=True)
class Mode:
    """What the GPU check and its CPU dry run do differently; every other step is the same code."""

    name: str
    backend: Backend
    device: str
    engine_label: str
    baseline_label: str
    needs_tensorrt_backend: bool
    lengths: tuple[int, ...]
    batch: int
    concurrency: int
    max_batch_size: int
    duration_s: float
    repeats: int
    intra_op_threads: int
    random_shape: tuple[tuple[str, int], ...] = ()
    """Overrides of --config's shape for the random model made without --model-dir."""


GPU = Mode(
    name="gpu",
    backend=Backend.TENSORRT,
    device="cuda",
    engine_label="tensorrt-fp16",
    baseline_label="pytorch-fp16",
    needs_tensorrt_backend=True,
    lengths=(64, 128, 512),
    batch=32,
    concurrency=32,
    max_batch_size=64,
    duration_s=10.0,
    repeats=20,
    intra_op_threads=0,
)
CPU_DRY_RUN = Mode(
    name="cpu-dry-run",
    backend=Backend.PYTHON,
    device="cpu",
    engine_label="onnxruntime-fp32",
    baseline_label="pytorch-fp32",
    needs_tensorrt_backend=False,
    lengths=(16, 64),
    batch=4,
    concurrency=4,
    max_batch_size=8,
    duration_s=2.0,
    repeats=3,
    intra_op_threads=1,
    random_shape=(
        ("num_hidden_layers", 2),
        ("hidden_size", 64),
        ("num_attention_heads", 4),
        ("intermediate_size", 128),
    ),
)


# -- the encoder in this process -----------------------------------------------------------------------------


class Runner(Protocol):
    """An encoder run in this process: PyTorch, the TensorRT engine, or onnxruntime."""

    def bind(self, batch: TokenBatch) -> Callable[[], Any]:
        """Put a batch's inputs on the device once; the returned call runs the model on them."""
        ...


class TorchRunner:
    """The PyTorch model with the export's pooling (`PooledEncoder`), in the precision it was given."""

    def __init__(self, model: Any, device: str) -> None:
        self.model = model
        self.device = device

    def bind(self, batch: TokenBatch) -> Callable[[], Any]:
        import torch

        feeds = {name: torch.from_numpy(array).to(self.device) for name, array in token_batch_inputs(batch).items()}

        def run() -> Any:
            with torch.inference_mode():
                return self.model(**feeds)

        return run


class EngineRunner:
    """Minimal TensorRT 10 runtime: torch tensors as device buffers, one profile."""

    def __init__(self, plan: Path) -> None:
        import tensorrt as trt

        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def __call__(self, feeds: dict) -> object:
        import torch

        batch = next(iter(feeds.values())).shape[0]
        for name, tensor in feeds.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        output_name = next(n for n in self.names if n not in feeds)
        out = torch.empty((batch, self.context.get_tensor_shape(output_name)[-1]), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(output_name, out.data_ptr())
        self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        return out

    def bind(self, batch: TokenBatch) -> Callable[[], Any]:
        import torch

        arrays = token_batch_inputs(batch)
        feeds = {name: torch.from_numpy(arrays[name]).cuda() for name in self.names if name in arrays}
        return lambda: self(feeds)


class OnnxRunner:
    """onnxruntime on the exported graph: what the dry run's Triton runs in its Python backend."""

    def __init__(self, onnx_file: Path, intra_op_threads: int) -> None:
        from bge_model_repository.encoder_runtime import OnnxEncoder

        self.encoder = OnnxEncoder(onnx_file, intra_op_threads)

    def bind(self, batch: TokenBatch) -> Callable[[], Any]:
        inputs = token_batch_inputs(batch)
        return lambda: self.encoder.run(inputs)


def to_numpy(vectors: Any) -> np.ndarray:
    """float32 numpy from a runner's output (numpy, or a torch tensor on any device and dtype)."""
    if isinstance(vectors, np.ndarray):
        return vectors.astype(np.float32, copy=False)
    return vectors.detach().float().cpu().numpy()


def seconds_per_call(call: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    """Mean seconds of `call` over `repeats` runs, after a few unrecorded ones."""
    for _ in range(min(3, repeats)):
        call()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    sync()
    return (time.perf_counter() - start) / repeats


def parity_against(reference: np.ndarray, candidate: np.ndarray, token_counts: list[int]) -> ParityResult:
    return check_parity(reference, candidate, PARITY_MIN_COSINE, token_counts)


def parity_line(what: str, result: ParityResult) -> str:
    verdict = "PASS" if result.passed else "FAIL"
    return (
        f"{what} vs PyTorch fp32: min cosine {result.min_cosine:.6f}, mean {result.mean_cosine:.6f} "
        f"over {len(result.token_counts)} texts of {min(result.token_counts)}-{max(result.token_counts)} tokens "
        f"(>= {result.threshold}) {verdict}"
    )


# -- served: bge-triton and the ensemble over gRPC -----------------------------------------------------------


class ServeError(RuntimeError):
    """The served model could not be started or asked."""


def serving_unavailable(
    mode: Mode, triton_home: Path | None, environ: Mapping[str, str] | None = None, system_home: Path | None = None
) -> str | None:
    """Why this mode's repository cannot be served here, or None when ``bge-triton`` can serve it.

    The same search as ``bge-triton`` (`find_triton`); the GPU check also needs its tensorrt backend.
    """
    environ = os.environ if environ is None else environ
    try:
        install = find_triton(triton_home, environ, system_home or SYSTEM_TRITON_HOME)
    except LauncherError as exc:
        found = str(exc)
    else:
        if not mode.needs_tensorrt_backend:
            return None
        if isinstance(install, SystemTriton) and (install.backends / "tensorrt").is_dir():
            return None
        found = f"{install.describe()} has none"
    if not mode.needs_tensorrt_backend:
        return found
    return (
        f"no Triton with the tensorrt backend here ({found}; looked at --triton-home, ${TRITON_HOME_ENV}, "
        f"{SYSTEM_TRITON_HOME}). Run inside nvcr.io/nvidia/tritonserver:24.12-py3 to serve the engine "
        "(deploy/README.md, GPU check)"
    )


@contextmanager
def launched_triton(
    repository: Path, triton_home: Path | None, ready_timeout_s: float, echo: Callable[[str], None]
) -> Iterator[str]:
    """``bge-triton`` serving `repository` on free loopback ports, stopped on exit; yields its gRPC address.

    The launcher is run as deployed (its own process, watchdog on); each line it prints goes to `echo`.
    """
    from bge_deploy.bench.local_stack import free_port

    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [
        sys.executable, "-m", "bge_deploy.launcher",  # the bge-triton console script, for this interpreter
        "--model-repository", str(repository),
        "--host", "127.0.0.1",
        "--http-port", str(http),
        "--grpc-port", str(grpc),
        "--metrics-port", str(metrics),
        "--exit-timeout", "10",
        "--ready-timeout", str(ready_timeout_s),
    ]  # fmt: skip
    if triton_home is not None:
        cmd += ["--triton-home", str(triton_home)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            echo(line.rstrip())
            if READY_LINE in line:
                ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + ready_timeout_s + 30
        while not ready.wait(0.2):
            if process.poll() is not None:
                reader.join(timeout=5)  # its last lines: the ready line may be among them
                if ready.is_set():
                    break
                raise ServeError(f"bge-triton exited (code {process.returncode}) before it was ready")
            if time.monotonic() > deadline:
                raise ServeError(f"bge-triton was not ready after {ready_timeout_s + 30:.0f}s")
        if process.poll() is not None:
            raise ServeError(f"bge-triton exited (code {process.returncode}) right after it was ready")
        yield f"127.0.0.1:{grpc}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # drains in-flight requests, as in a deployment
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(timeout=5)


def served_parity(grpc_url: str, model: str, texts: Sequence[str], reference: np.ndarray) -> ParityResult:
    """The ensemble's vectors for `texts` over gRPC (the project's client) against the reference vectors."""
    from bge_client.client import EmbeddingClient

    with EmbeddingClient(grpc_url, "grpc", model, timeout_s=120.0) as client:
        got = client.embed_with_tokens(list(texts))
    return parity_against(reference, got.vectors, got.num_tokens.tolist())


@dataclass(frozen=True)
class LoadSettings:
    """Closed-loop load on the ensemble, per token length."""

    concurrency: int
    texts_per_request: int
    duration_s: float
    max_requests: int | None


@dataclass(frozen=True)
class ServedRun:
    """One length's served load: rates and latencies, and the first error if any request failed."""

    throughput: Throughput
    first_error: str | None


def served_throughput(
    grpc_url: str, model: str, workloads: Mapping[int, Workload], load: LoadSettings
) -> dict[int, ServedRun]:
    """`bge-bench`'s Triton driver and closed loop on each length's texts, one length after another."""
    from bge_deploy.bench.drivers import TritonDriver, run_load, warm_up
    from bge_deploy.bench.measure import summarize

    async def measure() -> dict[int, ServedRun]:
        driver = TritonDriver(grpc_url, model)
        runs = {}
        try:
            for length, workload in workloads.items():
                requests = workload.requests(load.texts_per_request)
                await warm_up(driver, requests, load.concurrency, load.concurrency)
                record = await run_load(driver, requests, load.concurrency, load.max_requests, load.duration_s)
                runs[length] = ServedRun(summarize(record), record.first_error)
        finally:
            await driver.close()
        return runs

    return asyncio.run(measure())


# -- the report ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One token length: texts/s served (None: not served) and in process."""

    tokens: int
    served: float | None
    served_p50_ms: float | None
    engine: float
    baseline: float


def format_table(rows: Sequence[Row], engine_label: str, baseline_label: str) -> list[str]:
    """Aligned lines: tokens, served texts/s and p50, engine and baseline texts/s, the ratios to the baseline."""
    header = ["tokens", "served", "p50 ms", engine_label, baseline_label, "served/base", "engine/base"]
    widths = [max(len(h), 8) for h in header]

    def cells(row: Row) -> list[str]:
        served = "-" if row.served is None else f"{row.served:.1f}"
        p50 = "-" if row.served_p50_ms is None else f"{row.served_p50_ms:.1f}"
        served_ratio = "-" if row.served is None else f"{row.served / row.baseline:.2f}x"
        return [str(row.tokens), served, p50, f"{row.engine:.1f}", f"{row.baseline:.1f}", served_ratio,
                f"{row.engine / row.baseline:.2f}x"]  # fmt: skip

    def line(values: list[str]) -> str:
        return "  " + "  ".join(value.rjust(width) for value, width in zip(values, widths, strict=True))

    return [line(header)] + [line(cells(row)) for row in rows]


# -- the check -----------------------------------------------------------------------------------------------


def _lengths(text: str) -> tuple[int, ...]:
    try:
        specs = [LengthSpec.parse(part) for part in text.split(",") if part.strip()]
    except WorkloadError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not specs or any(spec.low != spec.high for spec in specs):
        raise argparse.ArgumentTypeError(f"'{text}' must be fixed token counts separated by commas, e.g. 64,128,512")
    return tuple(spec.low for spec in specs)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bge_deploy.gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="model with weights (default: random weights of --config)")
    parser.add_argument("--config", type=Path, default=Path("../shared/models/bge-large-zh-v1.5"))
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help="the same steps on CPU: python-backend export, no engine, pip Triton"
    )
    parser.add_argument(
        "--lengths", type=_lengths, help="tokens per text incl. [CLS]/[SEP] (default 64,128,512; dry run 16,64)"
    )
    parser.add_argument("--batch", type=int, help="texts per in-process batch (default 32; dry run 4)")
    parser.add_argument("--max-batch-size", type=int, help="the export's max_batch_size (default 64; dry run 8)")
    parser.add_argument("--concurrency", type=int, help="served: requests in flight (default 32; dry run 4)")
    parser.add_argument("--texts-per-request", type=int, default=1, help="served: texts in one request (default 1)")
    parser.add_argument("--duration", type=float, help="served: seconds of load per length (default 10; dry run 2)")
    parser.add_argument("--requests", type=int, help="served: at most this many requests per length")
    parser.add_argument("--repeats", type=int, help="in process: timed batches per length (default 20; dry run 3)")
    parser.add_argument("--triton-home", type=Path, help="a system Triton install to serve with (see bge-triton)")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds bge-triton may take to be ready")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (model, repository, engine)")
    args = parser.parse_args(argv)
    mode = CPU_DRY_RUN if args.cpu_dry_run else GPU
    defaults = {
        "lengths": mode.lengths,
        "batch": mode.batch,
        "max_batch_size": mode.max_batch_size,
        "concurrency": mode.concurrency,
        "duration": mode.duration_s,
        "repeats": mode.repeats,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch", "max_batch_size", "concurrency", "texts_per_request", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.texts_per_request > args.max_batch_size:
        parser.error("--texts-per-request must not exceed --max-batch-size")
    return args


def device_problem(mode: Mode) -> str | None:
    """Why this mode cannot run on this machine at all, or None."""
    if mode.device != "cuda":
        return None
    try:
        require_gpu()
    except EngineBuildError as exc:
        return f"{exc}. Nothing was checked; --cpu-dry-run runs the same steps on CPU"
    try:
        import torch
    except ImportError:
        return "torch is not installed: pip install torch (a CUDA build) and this package's [export] extra"

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} here cannot use the GPU (a CPU build?): pip install a CUDA build of torch"
    return None


def _say(message: str) -> None:
    print(f"gpu-check: {message}", flush=True)


def _echo(line: str) -> None:
    print(f"  {line}", flush=True)


@dataclass
class Prepared:
    """Step 1's result: the exported repository, the encoder to run in process, the texts to send."""

    model_dir: Path
    repository: Path
    encoder_file: Path
    """What the served encoder runs: the TensorRT plan (GPU) or the exported ONNX (dry run)."""
    tokenizer_dir: Path
    max_length: int
    workloads: dict[int, Workload]


def export_and_build(mode: Mode, args: argparse.Namespace, work: Path) -> Prepared:
    """Step 1: export (and for the GPU build the TensorRT engine); texts of each length for steps 2 and 3."""
    from bge_deploy.bench.random_model import build_random_model
    from bge_export.pipeline import run_export
    from bge_export.settings import ExportSettings
    from bge_model_repository.encoder_runtime import CpuEngine

    model_dir = args.model_dir or build_random_model(args.config, work / "model", **dict(mode.random_shape))
    settings = ExportSettings(
        model=str(model_dir),
        output=work / "model_repository",
        workdir=work / "export",
        name=MODEL_NAME,
        backend=mode.backend,
        # the dry run's stand-in for TensorRT is onnxruntime, served and in process alike
        cpu_engine=CpuEngine.ONNXRUNTIME,
        max_batch_size=args.max_batch_size,
        intra_op_threads=mode.intra_op_threads,
    )
    _say(f"exporting {model_dir} (--backend {mode.backend.value})")
    started = time.perf_counter()
    exported = run_export(settings)
    _say(f"exported in {time.perf_counter() - started:.0f}s")
    encoder_file = exported.onnx_file
    if mode.backend is Backend.TENSORRT:
        import tensorrt

        started = time.perf_counter()
        encoder_file = build_for_repository(settings.output, MODEL_NAME)
        _say(f"built {encoder_file.name} with TensorRT {tensorrt.__version__} in {time.perf_counter() - started:.0f}s")
    tokenizer_dir = settings.output / exported.spec.tokenizer_name / "1" / TOKENIZER_DIR
    pool = max(64, args.batch, args.concurrency * args.texts_per_request)
    cutter_tokenizer = load_tokenizer(tokenizer_dir)
    workloads = {n: build_workload(cutter_tokenizer, LengthSpec(n, n), pool) for n in args.lengths}
    return Prepared(model_dir, settings.output, encoder_file, tokenizer_dir, exported.spec.max_length, workloads)


def check_in_process(
    mode: Mode, args: argparse.Namespace, prepared: Prepared
) -> tuple[np.ndarray, ParityResult, dict[int, tuple[float, float]]]:
    """Step 2: the fp32 reference vectors, the engine's parity against them, texts/s of engine and baseline.

    The engine and the PyTorch model live only here: from step 3 on the GPU's memory is the server's.
    """
    import torch
    from transformers import AutoModel

    from bge_export.onnx_graph import PooledEncoder
    from bge_export.source import read_source

    engine: Runner
    if mode.backend is Backend.TENSORRT:
        engine = EngineRunner(prepared.encoder_file)
    else:
        engine = OnnxRunner(prepared.encoder_file, mode.intra_op_threads)
    tokenizer = load_tokenizer(prepared.tokenizer_dir)
    pooling = read_source(str(prepared.model_dir)).pooling
    model = PooledEncoder(AutoModel.from_pretrained(str(prepared.model_dir)), pooling).eval().to(mode.device)
    parity_batch = tokenize(tokenizer, list(PARITY_TEXTS), prepared.max_length)
    reference = to_numpy(TorchRunner(model, mode.device).bind(parity_batch)())
    candidate = to_numpy(engine.bind(parity_batch)())
    parity = parity_against(reference, candidate, parity_batch.num_tokens.ravel().tolist())

    baseline = TorchRunner(model.half() if mode.device == "cuda" else model, mode.device)
    sync = torch.cuda.synchronize if mode.device == "cuda" else (lambda: None)
    rates: dict[int, tuple[float, float]] = {}
    for length, workload in prepared.workloads.items():
        batch = tokenize(tokenizer, list(workload.texts[: args.batch]), prepared.max_length)
        engine_s = seconds_per_call(engine.bind(batch), sync, args.repeats)
        baseline_s = seconds_per_call(baseline.bind(batch), sync, args.repeats)
        rates[length] = (args.batch / engine_s, args.batch / baseline_s)
    return reference, parity, rates


def check_served(
    args: argparse.Namespace, prepared: Prepared, reference: np.ndarray, checks: dict[str, bool]
) -> dict[int, ServedRun]:
    """Step 3: ``bge-triton`` on the repository; served parity and load through the ensemble. Fills `checks`."""
    load = LoadSettings(args.concurrency, args.texts_per_request, args.duration, args.requests)
    served: dict[int, ServedRun] = {}
    _say(f"serving {prepared.repository} with bge-triton")
    try:
        with launched_triton(prepared.repository, args.triton_home, args.ready_timeout, _echo) as url:
            parity = served_parity(url, MODEL_NAME, PARITY_TEXTS, reference)
            _say(parity_line("served (Triton ensemble, gRPC)", parity))
            checks["served parity"] = parity.passed
            served = served_throughput(url, MODEL_NAME, prepared.workloads, load)
    except Exception as exc:  # the server, the client or the load: say which, and fail the check
        _say(f"serving FAILED: {type(exc).__name__}: {exc}")
        checks["serving"] = False
    for length, run in served.items():
        if run.throughput.errors:
            _say(f"served at {length} tokens: {run.throughput.errors} requests failed, first: {run.first_error}")
    if served:
        checks["served load"] = not any(run.throughput.errors for run in served.values())
    return served


def run_check(mode: Mode, args: argparse.Namespace, work: Path) -> int:
    """Steps 1-4; the exit code (0 every check that ran passed, 1 one failed)."""
    import torch

    if mode.device == "cuda":
        _say(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    else:
        _say("CPU dry run: the same steps as on a GPU, for the plumbing, not the speed")
    prepared = export_and_build(mode, args, work)
    reference, parity, in_process = check_in_process(mode, args, prepared)
    _say(parity_line(f"{mode.engine_label} in process", parity))
    checks = {"in-process parity": parity.passed}
    if mode.device == "cuda":
        torch.cuda.empty_cache()  # what step 2 held goes back to the GPU, for the server

    unavailable = serving_unavailable(mode, args.triton_home)
    if unavailable is None:
        served = check_served(args, prepared, reference, checks)
    else:
        served = {}
        _say(f"serving SKIPPED: {unavailable}")

    _say(
        f"throughput, texts/s - served: {args.concurrency} concurrent requests of {args.texts_per_request} "
        f"text(s) through the ensemble (gRPC), {args.duration:g} s per length; in process: batches of {args.batch}"
    )
    rows = [
        Row(
            tokens=length,
            served=served[length].throughput.texts_per_s if length in served else None,
            served_p50_ms=served[length].throughput.p50_ms if length in served else None,
            engine=in_process[length][0],
            baseline=in_process[length][1],
        )
        for length in args.lengths
    ]
    for line in format_table(rows, mode.engine_label, mode.baseline_label):
        print(line)
    failed = [name for name, passed in checks.items() if not passed]
    ran = ", ".join(checks) + ("" if unavailable is None else "; serving skipped")
    _say(f"FAIL ({', '.join(failed)})" if failed else f"PASS ({ran})")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mode = CPU_DRY_RUN if args.cpu_dry_run else GPU
    problem = device_problem(mode)
    if problem is not None:
        print(f"gpu-check: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("bge_export").setLevel(logging.INFO)  # the export's own steps and its parity gate
    work = Path(tempfile.mkdtemp(prefix=f"bge-{mode.name}-"))
    try:
        return run_check(mode, args, work)
    except (EngineBuildError, ParityError) as exc:  # the export's own gate, or TensorRT, refused the model
        _say(f"FAIL: {exc}")
        return 1
    finally:
        if args.keep:
            _say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
