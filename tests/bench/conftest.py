"""Fixtures of the benchmark tool's tests: the real bge-large-zh-v1.5 tokenizer from ../shared, a stand-in peer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_peer import BALLAST_MIB, CHILD_BALLAST_MIB
from support import require_bge_assets
from tokenizers import Tokenizer

from bge_deploy.bench.workload import load_model_tokenizer
from bge_deploy.serving.process import ManagedProcess, free_port


@pytest.fixture(scope="session")
def bge_tokenizer() -> Tokenizer:
    """The real tokenizer (skipped with the reason when ../shared/models is absent)."""
    return load_model_tokenizer(require_bge_assets())


PEER = Path(__file__).with_name("openai_peer.py")


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A peer holding known resident memory in itself and in a child: (base URL, port)."""
    port = free_port()
    command = [
        sys.executable,
        str(PEER),
        "--port",
        str(port),
        "--ballast-mib",
        str(BALLAST_MIB),
        "--child-ballast-mib",
        str(CHILD_BALLAST_MIB),
    ]
    log = tmp_path_factory.mktemp("peer") / "peer.log"
    with ManagedProcess("openai-peer", command, log_path=log) as process:
        process.wait_http(f"http://127.0.0.1:{port}/v1/models", timeout_s=30)
        yield f"http://127.0.0.1:{port}/v1", port
