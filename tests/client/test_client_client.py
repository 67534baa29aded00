"""The thin client: pure pieces without a server, then real calls to a real tritonserver over gRPC and HTTP."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from client_support import closed_port
from support import TritonHandle as TritonLike
from tritonclient.utils import InferenceServerException

from bge_client import AsyncEmbeddingClient, EmbeddingClient, RetryPolicy
from bge_client.client import is_retryable
from bge_client.model_config import read_model_facts

TEXTS = ["今天天气怎么样", "我喜欢看电影", "他热爱运动", "这部电影非常精彩"]
FAST_RETRY = RetryPolicy(attempts=3, initial_backoff_s=0.05, max_backoff_s=0.1)


# --- pure pieces -------------------------------------------------------------------------------


def test_retry_policy_backs_off_exponentially_up_to_a_cap() -> None:
    assert RetryPolicy(attempts=5, initial_backoff_s=0.1, max_backoff_s=0.5).delays() == [0.1, 0.2, 0.4, 0.5]
    assert RetryPolicy(attempts=1).delays() == []
    assert sum(RetryPolicy().delays()) / 2 > 5.0  # even jittered short, the default outlasts a restart (~5 s)


@pytest.mark.parametrize(
    ("status", "message", "retry"),
    [
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", True),
        ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", True),
        ("StatusCode.RESOURCE_EXHAUSTED", "", True),
        ("429", "Too Many Requests", True),
        ("503", "Exceeds maximum queue size", True),
        ("StatusCode.INTERNAL", "Stub process 'm-encoder_0_0' is not healthy.", True),
        ("StatusCode.INTERNAL", "onnxruntime failed", False),
        ("StatusCode.INVALID_ARGUMENT", "text 0 has 600 tokens", False),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", False),
        ("400", "bad", False),
    ],
)
def test_retry_only_overload_and_unreachable(status: str, message: str, retry: bool) -> None:
    assert is_retryable(InferenceServerException(message, status=status)) is retry


def test_connection_errors_retry_but_timeouts_do_not() -> None:
    assert is_retryable(ConnectionRefusedError()) and not is_retryable(TimeoutError())
    assert not is_retryable(ValueError())


def test_model_facts_from_grpc_and_http_configs() -> None:
    config = {
        "name": "m",
        "max_batch_size": 64,
        "output": [{"name": "embedding", "dims": ["1024"]}, {"name": "num_tokens", "dims": ["1"]}],
    }
    assert read_model_facts({"config": config}) == read_model_facts(config)
    assert (read_model_facts(config).max_batch_size, read_model_facts(config).dim) == (64, 1024)
    with pytest.raises(ValueError, match="no 'embedding' output"):
        read_model_facts({"name": "m", "output": []})


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="'grpc' or 'http'"):
        EmbeddingClient("localhost:1", protocol="websocket")  # type: ignore[arg-type]


# --- against a real tritonserver --------------------------------------------------------------


def test_embed_returns_unit_float32_rows_and_token_counts(triton: TritonLike, triton_url: str, protocol: str) -> None:
    with EmbeddingClient(triton_url, protocol, triton.model_name) as client:  # type: ignore[arg-type]
        vectors = client.embed(TEXTS)
        result = client.embed_with_tokens("今天天气怎么样")
        assert client.max_batch_size == triton.max_batch_size and client.dim == triton.dim
    assert vectors.shape == (4, triton.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert result.num_tokens.tolist() == [9]
    np.testing.assert_allclose(result.vectors[0], vectors[0], atol=1e-6)


def test_both_protocols_agree(triton: TritonLike) -> None:
    with (
        EmbeddingClient(triton.grpc_url, "grpc", triton.model_name) as grpc_client,
        EmbeddingClient(triton.http_url.removeprefix("http://"), "http", triton.model_name) as http_client,
    ):
        np.testing.assert_allclose(grpc_client.embed(TEXTS), http_client.embed(TEXTS), atol=1e-6)


def test_big_batches_are_chunked_in_order(triton: TritonLike, triton_url: str, protocol: str) -> None:
    texts = ["天" * (i + 1) for i in range(3 * triton.max_batch_size + 5)]  # one token per character
    with EmbeddingClient(triton_url, protocol, triton.model_name) as client:  # type: ignore[arg-type]
        together = client.embed_with_tokens(texts)
        one_by_one = np.concatenate([client.embed(t) for t in texts[:: triton.max_batch_size]])
    assert together.vectors.shape == (len(texts), triton.dim)
    np.testing.assert_allclose(together.vectors[:: triton.max_batch_size], one_by_one, atol=1e-6)
    assert together.num_tokens.tolist() == [len(t) + 2 for t in texts]


def test_truncate_parameter_reaches_triton(triton: TritonLike, triton_url: str, protocol: str) -> None:
    with EmbeddingClient(triton_url, protocol, triton.model_name) as client:  # type: ignore[arg-type]
        assert client.embed_with_tokens("长" * 600).num_tokens.tolist() == [512]
        with pytest.raises(InferenceServerException, match="602 tokens"):
            client.embed_with_tokens("长" * 600, truncate="NONE")


def test_async_client_matches_the_blocking_one(triton: TritonLike, triton_url: str, protocol: str) -> None:
    texts = ["雨" * (i + 1) for i in range(2 * triton.max_batch_size + 3)]

    async def run() -> np.ndarray:
        async with AsyncEmbeddingClient(
            triton_url,
            protocol,
            triton.model_name,  # type: ignore[arg-type]
            max_concurrency=2,
        ) as client:
            result = await client.embed_with_tokens(texts)
            assert result.num_tokens.tolist() == [len(t) + 2 for t in texts]
            return await client.embed(texts)

    vectors = asyncio.run(run())
    with EmbeddingClient(triton_url, protocol, triton.model_name) as client:  # type: ignore[arg-type]
        np.testing.assert_allclose(vectors, client.embed(texts), atol=1e-6)


def test_empty_input_gives_an_empty_matrix(triton: TritonLike) -> None:
    with EmbeddingClient(triton.grpc_url, "grpc", triton.model_name) as client:
        assert client.embed([]).shape == (0, triton.dim)


def test_unreachable_server_is_retried_with_backoff_then_raised(protocol: str) -> None:
    start = time.perf_counter()
    with (
        pytest.raises((InferenceServerException, OSError)),
        EmbeddingClient(
            f"127.0.0.1:{closed_port()}",
            protocol,
            retry=FAST_RETRY,  # type: ignore[arg-type]
            timeout_s=5,
        ) as client,
    ):
        client.embed("x")
    assert time.perf_counter() - start >= 0.5 * sum(FAST_RETRY.delays())  # both backoffs were waited


def test_async_unreachable_server_is_retried_then_raised(protocol: str) -> None:
    async def run() -> None:
        async with AsyncEmbeddingClient(
            f"127.0.0.1:{closed_port()}",
            protocol,  # type: ignore[arg-type]
            retry=FAST_RETRY,
            timeout_s=5,
        ) as client:
            await client.embed("x")

    start = time.perf_counter()
    with pytest.raises((InferenceServerException, OSError)):
        asyncio.run(run())
    assert time.perf_counter() - start >= 0.5 * sum(FAST_RETRY.delays())


def test_deadline_is_enforced_and_not_retried(triton: TritonLike) -> None:
    start = time.perf_counter()
    with (
        pytest.raises(InferenceServerException, match="Deadline"),
        EmbeddingClient(
            triton.grpc_url, "grpc", triton.model_name, timeout_s=0.0005, retry=RetryPolicy(attempts=1)
        ) as client,
    ):
        client.embed(["很长的文本" * 100] * triton.max_batch_size)
    assert time.perf_counter() - start < 1.0
