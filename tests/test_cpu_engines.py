"""The two CPU engines, onnxruntime (the default, every precision) and OpenVINO (``--cpu-engine openvino``, fp32):
the same vectors as each other and as sentence-transformers, in process and served, one lane or several."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import MINILM_NAME, export_model, loopback_server_options

from bge_export.parity import PARITY_TEXTS, reference_embeddings
from bge_export.triton_config import ENCODER_ONNX, ENCODER_ONNX_DATA, TOKENIZER_DIR
from bge_model_repository.encoder_runtime import (
    OPENVINO_SHAPE_CACHE,
    CpuEngine,
    OnnxEncoder,
    OpenVinoEncoder,
    open_encoder,
    token_batch_inputs,
)
from bge_model_repository.tokenization import load_tokenizer, tokenize

OV_NAME = "minilm-openvino"


def _padded_batch(tokenizer_dir: Path) -> dict[str, np.ndarray]:
    return token_batch_inputs(tokenize(load_tokenizer(tokenizer_dir), list(PARITY_TEXTS), 256))


@pytest.fixture(scope="module")
def openvino_export(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """MiniLM (real weights) exported for OpenVINO: the repository folder. (The shared server's is onnxruntime.)"""
    root = tmp_path_factory.mktemp("openvino")
    exported = export_model(
        minilm_dir, root / "repo", root / "work", OV_NAME, cpu_engine="openvino", intra_op_threads=1
    )
    assert exported.parity_min_cosine is not None and exported.parity_min_cosine >= 0.99999
    assert exported.fusions == {}, "OpenVINO reads the plain graph and fuses it itself"
    return root / "repo"


def test_default_fp32_export_is_onnxruntimes_fused_graph_with_its_weights_apart(triton) -> None:
    """The shared server's exports took the default engine: onnxruntime, its optimizer's graph, with the weights
    beside the graph (external data); MiniLM runs bge-large's layout, as conftest asked (one instance of 2 lanes;
    the default by weight size is unit-tested in test_triton_config)."""
    assert triton.minilm.fusions["Attention"] == 6, "every layer's attention fused"
    encoder = triton.repository / f"{MINILM_NAME}-encoder"
    config = (encoder / "config.pbtxt").read_text()
    assert 'key: "engine"' in config and 'string_value: "onnxruntime"' in config
    assert "count: 1" in config and 'key: "lanes"\n  value {\n    string_value: "2"' in config
    graph, weights = encoder / "1" / ENCODER_ONNX, encoder / "1" / ENCODER_ONNX_DATA
    assert weights.stat().st_size > 50 * 2**20 > graph.stat().st_size  # MiniLM's 90 MB of weights are apart
    assert weights.stat().st_mode & 0o777 == graph.stat().st_mode & 0o777, "readable by Triton's user as the graph is"


def test_openvino_runs_the_graph_like_onnxruntime(openvino_export: Path) -> None:
    onnx_file = openvino_export / f"{OV_NAME}-encoder" / "1" / ENCODER_ONNX
    inputs = _padded_batch(openvino_export / f"{OV_NAME}-tokenizer" / "1" / TOKENIZER_DIR)
    openvino, onnxruntime = OpenVinoEncoder(onnx_file, 1), OnnxEncoder(onnx_file, 1)
    np.testing.assert_allclose(openvino.run(inputs), onnxruntime.run(inputs), atol=1e-5)
    lengths = inputs["attention_mask"].sum(axis=1)
    sub_batched, stats = openvino.encode(inputs, lengths, max_batch=3, max_tokens=512)
    assert stats.batches > 1
    np.testing.assert_allclose(sub_batched, onnxruntime.run(inputs), atol=1e-5)
    assert openvino.config["CPU_RUNTIME_CACHE_CAPACITY"] == str(OPENVINO_SHAPE_CACHE), "bounds memory (BENCHMARKS.md)"
    assert isinstance(open_encoder(CpuEngine.OPENVINO, onnx_file, 1), OpenVinoEncoder)
    assert isinstance(open_encoder(CpuEngine.ONNXRUNTIME, onnx_file, 1), OnnxEncoder)


@pytest.mark.parametrize("engine", list(CpuEngine))
def test_lanes_give_the_same_vectors_as_one_run(openvino_export: Path, engine: CpuEngine) -> None:
    """Sub-batches run at once on one copy of the weights (threads calling one session, or one compiled model's
    streams, each with its own infer request): every row gets its own vector back, in order."""
    onnx_file = openvino_export / f"{OV_NAME}-encoder" / "1" / ENCODER_ONNX
    inputs = _padded_batch(openvino_export / f"{OV_NAME}-tokenizer" / "1" / TOKENIZER_DIR)
    lengths = inputs["attention_mask"].sum(axis=1)
    whole = OnnxEncoder(onnx_file, 1).run(inputs)
    laned = open_encoder(engine, onnx_file, 1, lanes=3)
    try:
        assert laned.lanes == 3
        for _ in range(3):  # lanes reused across calls
            vectors, stats = laned.encode(inputs, lengths, max_batch=64, max_tokens=8192)
            assert stats.batches >= 3  # spread over the lanes though one run would take them all
            np.testing.assert_allclose(vectors, whole, atol=1e-5)
    finally:
        laned.close()


def test_missing_openvino_says_what_to_do(openvino_export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A serving environment without openvino gets the two ways out, not a bare ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'openvino.*--cpu-engine onnxruntime"):
        OpenVinoEncoder(openvino_export / f"{OV_NAME}-encoder" / "1" / ENCODER_ONNX, 1)


def test_openvino_config_names_the_engine(openvino_export: Path) -> None:
    config = (openvino_export / f"{OV_NAME}-encoder" / "config.pbtxt").read_text()
    assert 'key: "engine"' in config and 'string_value: "openvino"' in config


@pytest.mark.parametrize("overrides", [{"precision": "int8"}, {"precision": "fp16"}, {"backend": "tensorrt"}])
def test_openvino_refuses_what_it_cannot_serve(tmp_path: Path, minilm_dir: Path, overrides: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="--cpu-engine openvino serves fp32 on the python backend"):
        export_model(minilm_dir, tmp_path / "repo", tmp_path / "work", "refused", cpu_engine="openvino", **overrides)
    assert not (tmp_path / "repo").exists(), "refused before any work"


@pytest.fixture(scope="module")
def openvino_triton(openvino_export: Path) -> Iterator[str]:
    from bge_deploy.serving.triton import TritonServer

    options = loopback_server_options(openvino_export)
    with TritonServer(options) as server:
        server.wait_ready(timeout_s=120)
        yield server.grpc_url


def test_served_engines_match_each_other_and_sentence_transformers(
    openvino_triton: str, triton, minilm_dir: Path
) -> None:
    from bge_client.client import EmbeddingClient

    texts = list(PARITY_TEXTS)
    with EmbeddingClient(openvino_triton, "grpc", OV_NAME, timeout_s=60) as client:
        openvino = client.embed(texts)
    with EmbeddingClient(triton.grpc_url, "grpc", MINILM_NAME, timeout_s=60) as client:
        onnxruntime = client.embed(texts)
    reference = reference_embeddings(minilm_dir, texts, 256)
    for served in (openvino, onnxruntime):
        assert np.min(np.sum(served * reference, axis=1)) >= 0.99999
    assert np.min(np.sum(openvino * onnxruntime, axis=1)) >= 0.99999
