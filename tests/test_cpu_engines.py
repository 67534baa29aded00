"""The two CPU engines, OpenVINO (the fp32 default) and onnxruntime (``--cpu-engine onnxruntime``, and int8):
the same vectors as each other and as sentence-transformers, in process and served."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import MINILM_NAME, export_model, loopback_server_options

from bge_export.parity import PARITY_TEXTS, reference_embeddings
from bge_export.triton_config import TOKENIZER_DIR
from bge_model_repository.encoder_runtime import (
    OPENVINO_SHAPE_CACHE,
    CpuEngine,
    OnnxEncoder,
    OpenVinoEncoder,
    open_encoder,
    token_batch_inputs,
)
from bge_model_repository.tokenization import load_tokenizer, tokenize

ORT_NAME = "minilm-onnxruntime"


def _padded_batch(tokenizer_dir: Path) -> dict[str, np.ndarray]:
    return token_batch_inputs(tokenize(load_tokenizer(tokenizer_dir), list(PARITY_TEXTS), 256))


@pytest.fixture(scope="module")
def onnxruntime_export(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """MiniLM (real weights) exported for onnxruntime: the repository folder. (The shared server's is OpenVINO.)"""
    root = tmp_path_factory.mktemp("onnxruntime")
    exported = export_model(
        minilm_dir, root / "repo", root / "work", ORT_NAME, cpu_engine="onnxruntime", intra_op_threads=1
    )
    assert exported.parity_min_cosine is not None and exported.parity_min_cosine >= 0.99999
    assert exported.fusions["Attention"] == 6, "onnxruntime gets its optimizer's graph: every layer's attention fused"
    return root / "repo"


def test_default_fp32_export_is_the_plain_graph_for_openvino(triton) -> None:
    """The shared server's exports took the default engine: OpenVINO reads the plain graph and fuses it itself."""
    assert triton.minilm.fusions == {}
    config = (triton.repository / f"{MINILM_NAME}-encoder" / "config.pbtxt").read_text()
    assert 'key: "engine"' in config and 'string_value: "openvino"' in config


def test_openvino_runs_the_graph_like_onnxruntime(triton) -> None:
    onnx_file = triton.repository / f"{MINILM_NAME}-encoder" / "1" / "model.onnx"
    inputs = _padded_batch(triton.repository / f"{MINILM_NAME}-tokenizer" / "1" / TOKENIZER_DIR)
    openvino, onnxruntime = OpenVinoEncoder(onnx_file, 1), OnnxEncoder(onnx_file, 1)
    np.testing.assert_allclose(openvino.run(inputs), onnxruntime.run(inputs), atol=1e-5)
    lengths = inputs["attention_mask"].sum(axis=1)
    sub_batched, stats = openvino.encode(inputs, lengths, max_batch=3, max_tokens=512)
    assert stats.batches > 1
    np.testing.assert_allclose(sub_batched, onnxruntime.run(inputs), atol=1e-5)
    assert openvino.config["CPU_RUNTIME_CACHE_CAPACITY"] == str(OPENVINO_SHAPE_CACHE), "bounds memory (BENCHMARKS.md)"
    assert isinstance(open_encoder(CpuEngine.OPENVINO, onnx_file, 1), OpenVinoEncoder)
    assert isinstance(open_encoder(CpuEngine.ONNXRUNTIME, onnx_file, 1), OnnxEncoder)


def test_missing_openvino_says_what_to_do(triton, monkeypatch: pytest.MonkeyPatch) -> None:
    """A serving environment without openvino gets the two ways out, not a bare ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'openvino.*--cpu-engine onnxruntime"):
        OpenVinoEncoder(triton.repository / f"{MINILM_NAME}-encoder" / "1" / "model.onnx", 1)


def test_onnxruntime_config_names_the_engine(onnxruntime_export: Path) -> None:
    config = (onnxruntime_export / f"{ORT_NAME}-encoder" / "config.pbtxt").read_text()
    assert 'key: "engine"' in config and 'string_value: "onnxruntime"' in config


@pytest.mark.parametrize("overrides", [{"precision": "int8"}, {"precision": "fp16"}, {"backend": "tensorrt"}])
def test_openvino_refuses_what_it_cannot_serve(tmp_path: Path, minilm_dir: Path, overrides: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="--cpu-engine openvino serves fp32 on the python backend"):
        export_model(minilm_dir, tmp_path / "repo", tmp_path / "work", "refused", cpu_engine="openvino", **overrides)
    assert not (tmp_path / "repo").exists(), "refused before any work"


@pytest.fixture(scope="module")
def onnxruntime_triton(onnxruntime_export: Path) -> Iterator[str]:
    from bge_deploy.serving.triton import TritonServer

    options = loopback_server_options(onnxruntime_export)
    with TritonServer(options) as server:
        server.wait_ready(timeout_s=120)
        yield server.grpc_url


def test_served_engines_match_each_other_and_sentence_transformers(
    onnxruntime_triton: str, triton, minilm_dir: Path
) -> None:
    from bge_client.client import EmbeddingClient

    texts = list(PARITY_TEXTS)
    with EmbeddingClient(onnxruntime_triton, "grpc", ORT_NAME, timeout_s=60) as client:
        onnxruntime = client.embed(texts)
    with EmbeddingClient(triton.grpc_url, "grpc", MINILM_NAME, timeout_s=60) as client:
        openvino = client.embed(texts)
    reference = reference_embeddings(minilm_dir, texts, 256)
    for served in (openvino, onnxruntime):
        assert np.min(np.sum(served * reference, axis=1)) >= 0.99999
    assert np.min(np.sum(openvino * onnxruntime, axis=1)) >= 0.99999
