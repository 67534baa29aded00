"""Helpers shared by the test folders (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from bge_deploy.serving.triton import ServerOptions

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BGE_SHARED_DIR", REPO_ROOT.parent / "shared"))
BGE_ASSETS = SHARED / "models" / "bge-large-zh-v1.5"
TINY_NAME = "bge-tiny"
MINILM_NAME = "all-minilm-l6-v2"
TINY_MAX_BATCH = 16

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Console scripts (bge-triton, bge-serve) live beside this interpreter, activated venv or not.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require_bge_assets() -> Path:
    if not (BGE_ASSETS / "tokenizer.json").is_file():
        pytest.skip(f"needs the bge-large-zh-v1.5 tokenizer/config from ../shared/models (not found at {BGE_ASSETS})")
    return BGE_ASSETS


def build_random_bert(assets: Path, out: Path, **shape: int) -> Path:
    """Random weights of a given shape + the real tokenizer and sentence-transformers files (seed 0)."""
    from bge_deploy.bench.random_model import build_random_model

    return build_random_model(assets, out, seed=0, **shape)


@dataclass
class ExportedModel:
    name: str
    source_dir: Path
    dim: int
    max_batch_size: int
    fusions: dict[str, int]
    parity_min_cosine: float | None


@dataclass
class TritonHandle:
    """What tests need to reach the server; ``model_name`` & co. refer to the tiny bge model."""

    grpc_url: str
    http_url: str
    metrics_url: str
    repository: Path
    bge: ExportedModel | None
    minilm: ExportedModel
    server: object

    def _bge(self) -> ExportedModel:
        if self.bge is None:
            pytest.skip(f"needs ../shared/models/bge-large-zh-v1.5 (not found at {BGE_ASSETS})")
        return self.bge

    @property
    def model_name(self) -> str:
        return self._bge().name

    @property
    def dim(self) -> int:
        return self._bge().dim

    @property
    def max_batch_size(self) -> int:
        return self._bge().max_batch_size


def export_model(source: Path, repository: Path, workdir: Path, name: str, **overrides: object) -> ExportedModel:
    from bge_export.pipeline import run_export
    from bge_export.settings import ExportSettings

    settings = ExportSettings(model=str(source), output=repository, workdir=workdir, name=name, **overrides)
    result = run_export(settings)
    return ExportedModel(
        name=name,
        source_dir=source,
        dim=result.spec.dim,
        max_batch_size=settings.max_batch_size,
        fusions=result.fusions.counts if result.fusions else {},
        parity_min_cosine=result.parity.min_cosine if result.parity else None,
    )


def loopback_server_options(repository: Path) -> ServerOptions:
    """A test tritonserver: free loopback ports, a short drain."""
    from bge_deploy.serving.process import free_port
    from bge_deploy.serving.triton import COLOCATED_NICE, ServerOptions

    return ServerOptions(
        model_repository=repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        host="127.0.0.1",
        exit_timeout_s=10,
        nice=COLOCATED_NICE,  # as bge-serve runs it: the tests' gateways share these cores
    )
