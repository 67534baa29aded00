"""GPU check, one command: the TensorRT FP16 engine built, served by Triton, checked and timed against PyTorch.

Run it inside NVIDIA's Triton image (exact command: deploy/README.md, "GPU check"):

    python -m bge_deploy.gpu.check --config ../shared/models/bge-large-zh-v1.5   # random weights, real shape
    python -m bge_deploy.gpu.check --model-dir /data/bge-large-zh-v1.5           # real weights

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
--triton-home (or BGE_TRITON_HOME, which bge-triton reads). Without one (NVIDIA's TensorRT image, say)
step 3 is skipped with a note and the exit code covers steps 1 and 2 only.

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

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from pydantic_settings import CliApp

from bge_deploy.bench.workload import LengthSpec, Workload, build_workload
from bge_deploy.gpu.modes import MODEL_NAME, Mode
from bge_deploy.gpu.runners import EngineRunner, OnnxRunner, Runner, TorchRunner, seconds_per_call, to_numpy
from bge_deploy.gpu.served import (
    LoadSettings,
    ServedRun,
    launched_triton,
    parity_against,
    parity_line,
    served_parity,
    served_throughput,
    serving_unavailable,
)
from bge_deploy.gpu.settings import GpuCheckSettings
from bge_export.parity import PARITY_TEXTS, ParityError, ParityResult
from bge_export.settings import Backend
from bge_export.tensorrt_engine import EngineBuildError, build_for_repository, require_gpu
from bge_export.triton_config import TOKENIZER_DIR
from bge_model_repository.logs import configure_logging
from bge_model_repository.tokenization import load_tokenizer, tokenize

log = logging.getLogger("bge-gpu")


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
    """A line of the check's report: its result, on stdout (the progress of its steps is logged)."""
    sys.stdout.write(f"gpu-check: {message}\n")
    sys.stdout.flush()


def _echo(line: str) -> None:
    sys.stdout.write(f"  {line}\n")
    sys.stdout.flush()


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


def export_and_build(mode: Mode, args: GpuCheckSettings, work: Path) -> Prepared:
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
    workloads = {n: build_workload(cutter_tokenizer, LengthSpec(n, n), pool) for n in args.length_values}
    return Prepared(model_dir, settings.output, encoder_file, tokenizer_dir, exported.spec.max_length, workloads)


def check_in_process(
    mode: Mode, args: GpuCheckSettings, prepared: Prepared
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
    args: GpuCheckSettings, prepared: Prepared, reference: np.ndarray, checks: dict[str, bool], work: Path
) -> dict[int, ServedRun]:
    """Step 3: ``bge-triton`` on the repository; served parity and load through the ensemble. Fills `checks`."""
    load = LoadSettings(args.concurrency, args.texts_per_request, args.duration, args.requests)
    served: dict[int, ServedRun] = {}
    _say(f"serving {prepared.repository} with bge-triton")
    try:
        with launched_triton(prepared.repository, args.triton_home, args.ready_timeout, work, _echo) as url:
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


def run_check(mode: Mode, args: GpuCheckSettings, work: Path) -> int:
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
        served = check_served(args, prepared, reference, checks, work)
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
        for length in args.length_values
    ]
    for line in format_table(rows, mode.engine_label, mode.baseline_label):
        sys.stdout.write(line + "\n")
    failed = [name for name, passed in checks.items() if not passed]
    ran = ", ".join(checks) + ("" if unavailable is None else "; serving skipped")
    _say(f"FAIL ({', '.join(failed)})" if failed else f"PASS ({ran})")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    try:
        args = CliApp.run(GpuCheckSettings, cli_args=list(sys.argv[1:] if argv is None else argv)).resolved()
        args.length_values  # noqa: B018 - checked before any work
    except (ValidationError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    mode = args.mode
    problem = device_problem(mode)
    if problem is not None:
        log.error("%s", problem)
        return 2
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
