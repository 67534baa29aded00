"""Fixtures of the benchmark tool's tests: the real bge-large-zh-v1.5 tokenizer from ../shared."""

from __future__ import annotations

import pytest
from support import require_bge_assets
from tokenizers import Tokenizer

from bge_deploy.bench.workload import load_model_tokenizer


@pytest.fixture(scope="session")
def bge_tokenizer() -> Tokenizer:
    """The real tokenizer (skipped with the reason when ../shared/models is absent)."""
    return load_model_tokenizer(require_bge_assets())
