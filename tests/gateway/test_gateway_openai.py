"""The official `openai` SDK against a real gateway process and a real tritonserver."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from gateway_process import SERVED_NAME, Gateway
from support import TritonHandle as TritonLike

from bge_client import EmbeddingClient
from bge_model_repository.contract import QUERY_INSTRUCTION

WEATHER_IDS = [101, 791, 1921, 1921, 3698, 2582, 720, 3416, 102]  # 今天天气怎么样, per ../shared/models


@pytest.fixture(scope="module")
def sdk(gateway: Gateway) -> openai.Client:
    return openai.Client(base_url=f"{gateway.url}/v1", api_key="EMPTY", max_retries=0)


@pytest.fixture(scope="module")
def triton_client(triton: TritonLike) -> Iterator[EmbeddingClient]:
    """Reference vectors straight from Triton, to check what the gateway returns."""
    with EmbeddingClient(triton.grpc_url, "grpc", triton.model_name) as client:
        yield client


def test_issue_snippets_as_written(gateway: Gateway, triton: TritonLike) -> None:
    client = openai.Client(base_url=f"{gateway.url}/v1", api_key="EMPTY")
    r = client.embeddings.create(model="bge-large-zh-v1.5", input="今天天气怎么样")
    assert len(r.data) == 1 and len(r.data[0].embedding) == triton.dim
    assert r.usage.prompt_tokens == r.usage.total_tokens == 9
    r = client.embeddings.create(model="bge-large-zh-v1.5", input=["我喜欢看电影", "他热爱运动", "这部电影非常精彩"])
    assert [d.index for d in r.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in r.data])
    assert vectors.shape == (3, triton.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert r.model == SERVED_NAME and r.object == "list"
    assert r.usage.prompt_tokens == sum(len(t) + 2 for t in ["我喜欢看电影", "他热爱运动", "这部电影非常精彩"])


def test_cosine_similarity_example(sdk: openai.Client, triton_client: EmbeddingClient) -> None:
    from sklearn.metrics.pairwise import cosine_similarity

    sentences = ["我喜欢看电影", "他热爱运动", "这部电影非常精彩"]
    response = sdk.embeddings.create(model="bge-large-zh-v1.5", input=sentences)
    embeddings = np.array([item.embedding for item in response.data])
    similarity = cosine_similarity(embeddings)
    assert similarity.shape == (3, 3)
    np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-5)
    np.testing.assert_allclose(similarity, embeddings @ embeddings.T, atol=1e-5)  # unit vectors
    # Same vectors, same order, as Triton gives without the gateway.
    np.testing.assert_allclose(embeddings, triton_client.embed(sentences), atol=1e-6)


def test_base64_and_float_give_identical_vectors(sdk: openai.Client) -> None:
    texts = ["我喜欢看电影", "Retrieval needs good embeddings."]
    as_float = sdk.embeddings.create(model=SERVED_NAME, input=texts, encoding_format="float")
    as_base64 = sdk.embeddings.create(model=SERVED_NAME, input=texts)  # the SDK asks for base64
    for a, b in zip(as_float.data, as_base64.data, strict=True):
        assert a.embedding == b.embedding


def test_response_has_exactly_openais_shape(gateway: Gateway, triton: TritonLike) -> None:
    body = httpx.post(f"{gateway.url}/v1/embeddings", json={"model": SERVED_NAME, "input": ["a", "b"]}).json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list" and body["model"] == SERVED_NAME
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    assert [set(d) for d in body["data"]] == [{"object", "index", "embedding"}] * 2
    assert all(d["object"] == "embedding" and len(d["embedding"]) == triton.dim for d in body["data"])


def test_big_request_is_chunked_deduplicated_and_in_order(
    sdk: openai.Client, triton: TritonLike, triton_client: EmbeddingClient
) -> None:
    unique = [f"第{i}句话：今天天气不错" for i in range(100)]
    texts = [unique[(i * 7) % len(unique)] for i in range(2048)]  # 2048 inputs, 100 distinct
    response = sdk.embeddings.create(model=SERVED_NAME, input=texts)
    assert [d.index for d in response.data] == list(range(2048))
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    expected = triton_client.embed_with_tokens(unique)
    order = [(i * 7) % len(unique) for i in range(2048)]
    np.testing.assert_allclose(got, expected.vectors[order], atol=1e-6)
    assert response.usage.prompt_tokens == int(expected.num_tokens[order].sum())
    assert triton.max_batch_size < 2048  # so this really was split


def test_token_id_input_goes_to_the_encoder(sdk: openai.Client) -> None:
    text = sdk.embeddings.create(model=SERVED_NAME, input="今天天气怎么样", encoding_format="float")
    ids = sdk.embeddings.create(model=SERVED_NAME, input=WEATHER_IDS, encoding_format="float")
    five = [*WEATHER_IDS[:4], WEATHER_IDS[-1]]  # [CLS] 今天天 [SEP]
    rows = sdk.embeddings.create(model=SERVED_NAME, input=[WEATHER_IDS, five], encoding_format="float")
    np.testing.assert_allclose(ids.data[0].embedding, text.data[0].embedding, atol=1e-5)
    np.testing.assert_allclose(rows.data[0].embedding, text.data[0].embedding, atol=1e-5)
    assert ids.usage.prompt_tokens == 9 and rows.usage.prompt_tokens == 9 + 5


def test_token_ids_over_the_limit_are_truncated_or_refused(sdk: openai.Client) -> None:
    long_ids = [101] + [791] * 600 + [102]
    cut = sdk.embeddings.create(model=SERVED_NAME, input=[long_ids], extra_body={"truncate": "END"})
    assert cut.usage.prompt_tokens == 512
    # cut as the tokenizer cuts text: [CLS] + 510 tokens + [SEP], the same vector as the text's
    text = sdk.embeddings.create(model=SERVED_NAME, input="今" * 600, encoding_format="float")
    ids = sdk.embeddings.create(model=SERVED_NAME, input=[long_ids], encoding_format="float")
    np.testing.assert_allclose(ids.data[0].embedding, text.data[0].embedding, atol=1e-5)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.embeddings.create(model=SERVED_NAME, input=[long_ids], extra_body={"truncate": "NONE"})
    assert "602 tokens" in info.value.message and "512" in info.value.message


def test_truncate_end_start_none_for_text(sdk: openai.Client) -> None:
    long_text = "今" * 300 + "天" * 300  # 602 tokens with [CLS]/[SEP]
    end = sdk.embeddings.create(model=SERVED_NAME, input=long_text, encoding_format="float")
    start = sdk.embeddings.create(
        model=SERVED_NAME, input=long_text, encoding_format="float", extra_body={"truncate": "START"}
    )
    assert end.usage.prompt_tokens == start.usage.prompt_tokens == 512
    assert end.data[0].embedding != start.data[0].embedding
    with pytest.raises(openai.BadRequestError) as info:
        sdk.embeddings.create(model=SERVED_NAME, input=["ok", long_text], extra_body={"truncate": "NONE"})
    assert "602" in info.value.message and "512" in info.value.message
    assert "input[1]" in info.value.message


def test_query_gets_the_instruction_and_passage_does_not(sdk: openai.Client) -> None:
    def embed(text: str, **extra: str) -> list[float]:
        return (
            sdk.embeddings.create(model=SERVED_NAME, input=text, encoding_format="float", extra_body=extra)
            .data[0]
            .embedding
        )

    assert embed("天气", input_type="query") == embed(QUERY_INSTRUCTION + "天气")
    assert embed("天气", input_type="passage") == embed("天气")


def test_dimensions_equal_to_native_is_accepted(sdk: openai.Client, triton: TritonLike) -> None:
    r = sdk.embeddings.create(model=SERVED_NAME, input="天气", dimensions=triton.dim)
    assert len(r.data[0].embedding) == triton.dim


def test_models_and_health(gateway: Gateway, sdk: openai.Client, triton: TritonLike) -> None:
    assert [m.id for m in sdk.models.list().data] == [SERVED_NAME]
    health = httpx.get(f"{gateway.url}/health").json()
    assert health["status"] == "ok" and health["triton_model"] == triton.model_name
    assert health["max_batch_size"] == triton.max_batch_size and health["dim"] == triton.dim


def test_metrics_count_requests_texts_tokens_and_triton_time(gateway: Gateway, sdk: openai.Client) -> None:
    sdk.embeddings.create(model=SERVED_NAME, input=["指标", "指标"])
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="no-such-model", input="x")
    text = httpx.get(f"{gateway.url}/metrics").text
    for needle in (
        'bge_gateway_requests_total{route="/v1/embeddings",status="200"}',
        'bge_gateway_errors_total{reason="model_not_found"}',
        "bge_gateway_texts_total",
        "bge_gateway_tokens_total",
        'bge_gateway_request_duration_seconds_bucket{le="0.005",route="/v1/embeddings"}',
        "bge_gateway_triton_duration_seconds_count",
    ):
        assert needle in text, needle


def test_start_up_log_says_what_is_served(gateway: Gateway, triton: TritonLike) -> None:
    log = gateway.log()
    assert f"Triton model '{triton.model_name}' at {triton.grpc_url}" in log
    assert "listening on http://127.0.0.1:" in log
    assert "ready: Triton model" in log


HELLO_WORLD_CL100K = [15339, 1917]  # "hello world" as tiktoken's cl100k_base ids: what LangChain sends by default


def test_another_tokenizers_ids_are_refused_naming_the_langchain_fix(sdk: openai.Client) -> None:
    """Embedding them would answer 200 with vectors of cosine ~0.67 to the right ones."""
    with pytest.raises(openai.BadRequestError) as info:
        sdk.embeddings.create(model=SERVED_NAME, input=[HELLO_WORLD_CL100K])
    assert info.value.status_code == 400
    assert "input[0]" in info.value.message and "check_embedding_ctx_length=False" in info.value.message
    ok = sdk.embeddings.create(model=SERVED_NAME, input=[[101, 791, 102]])
    assert ok.usage.prompt_tokens == 3


def test_an_operator_can_accept_raw_token_ids(raw_ids_gateway: Gateway) -> None:
    raw = openai.Client(base_url=f"{raw_ids_gateway.url}/v1", api_key="EMPTY", max_retries=0)
    response = raw.embeddings.create(model=SERVED_NAME, input=[HELLO_WORLD_CL100K])
    assert response.usage.prompt_tokens == 2 and len(response.data) == 1
