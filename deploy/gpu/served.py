"""The GPU check's serving step: ``bge-triton`` on the exported repository, parity and load through the ensemble."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bge_deploy.bench.measure import Throughput
from bge_deploy.bench.workload import Workload
from bge_deploy.gpu.modes import PARITY_MIN_COSINE, Mode
from bge_deploy.serving.install import SYSTEM_TRITON_HOME, TRITON_HOME_ENV, LauncherError, SystemTriton, find_triton
from bge_deploy.serving.launched import LaunchedTriton
from bge_deploy.serving.process import ProcessError
from bge_export.parity import ParityResult, check_parity


def parity_against(reference: np.ndarray, candidate: np.ndarray, token_counts: list[int]) -> ParityResult:
    return check_parity(reference, candidate, PARITY_MIN_COSINE, token_counts)


def parity_line(what: str, result: ParityResult) -> str:
    verdict = "PASS" if result.passed else "FAIL"
    return (
        f"{what} vs PyTorch fp32: min cosine {result.min_cosine:.6f}, mean {result.mean_cosine:.6f} "
        f"over {len(result.token_counts)} texts of {min(result.token_counts)}-{max(result.token_counts)} tokens "
        f"(>= {result.threshold}) {verdict}"
    )


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
    repository: Path, triton_home: Path | None, ready_timeout_s: float, work: Path, echo: Callable[[str], None]
) -> Iterator[str]:
    """``bge-triton`` serving `repository` on free loopback ports, stopped on exit; yields its gRPC address.

    The launcher is run as deployed (its own process, watchdog on); each line it logs goes to `echo`.
    """
    flags = ["--exit-timeout", "10", "--ready-timeout", str(ready_timeout_s)]
    if triton_home is not None:
        flags += ["--home", str(triton_home)]
    launcher = LaunchedTriton(repository, *flags, log_path=work / "bge-triton.log", echo=echo).start()
    try:
        try:
            launcher.wait_ready(ready_timeout_s + 30)
        except ProcessError as exc:
            raise ServeError(str(exc)) from None
        yield launcher.grpc_url
    finally:
        launcher.stop(40)  # SIGTERM drains in-flight requests, as in a deployment


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
