"""Unit tests of the service's logic with a stand-in backend: dedup, chunking, order, limits."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fake_backend import DIM, FakeBackend, vector_for

from bge_client.gateway.dimensions import resolve_dimensions, shorten
from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.inference import Deadline
from bge_client.gateway.metrics import Metrics
from bge_client.gateway.protocol import EmbeddingRequest
from bge_client.gateway.service import EmbeddingService
from bge_client.gateway.settings import GatewaySettings


def service(backend: FakeBackend, **settings: object) -> EmbeddingService:
    return EmbeddingService(GatewaySettings(**settings), backend, Metrics())  # type: ignore[arg-type]


def request(**fields: object) -> EmbeddingRequest:
    return EmbeddingRequest.model_validate({"model": "bge-large-zh-v1.5", **fields})


def test_identical_texts_are_computed_once_and_results_keep_input_order() -> None:
    backend = FakeBackend(max_batch_size=2)
    texts = ["a", "b", "a", "c", "b", "d", "a"]
    result = asyncio.run(service(backend).embed(request(input=texts)))
    sent = [t for call, _ in backend.text_calls for t in call]
    assert sent == ["a", "b", "c", "d"]  # unique, first-seen order
    assert all(len(call) <= 2 for call, _ in backend.text_calls)  # chunks fit max_batch_size
    np.testing.assert_array_equal(result.vectors, np.stack([vector_for(t) for t in texts]))
    assert result.num_tokens.tolist() == [3] * 7 and result.prompt_tokens == 21


def test_chunks_run_concurrently_up_to_the_limit() -> None:
    gate = asyncio.Event()
    backend = FakeBackend(max_batch_size=1, hold=gate)

    async def run() -> int:
        task = asyncio.create_task(service(backend, chunk_concurrency=3).embed(request(input=list("abcdef"))))
        await asyncio.sleep(0.01)
        started = len(backend.text_calls)
        gate.set()
        await task
        return started

    assert asyncio.run(run()) == 3


def test_query_gets_the_instruction_and_truncate_is_passed_on() -> None:
    backend = FakeBackend()
    asyncio.run(
        service(backend, query_instruction="Q:").embed(request(input=["x"], input_type="query", truncate="START"))
    )
    asyncio.run(service(backend).embed(request(input=["x"], input_type="passage")))
    assert backend.text_calls == [(["Q:x"], "START"), (["x"], "END")]


def test_token_ids_skip_the_tokenizer_and_count_as_usage() -> None:
    backend = FakeBackend(max_batch_size=2)
    result = asyncio.run(service(backend).embed(request(input=[[101, 5, 102], [101, 102], [101, 5, 102]])))
    assert backend.token_calls == [[[101, 5, 102], [101, 102]]] and backend.text_calls == []
    assert result.num_tokens.tolist() == [3, 2, 3]
    np.testing.assert_array_equal(result.vectors[0], result.vectors[2])


def test_dimensions() -> None:
    assert resolve_dimensions(None, 1024, []) == 1024
    assert resolve_dimensions(1024, 1024, []) == 1024
    assert resolve_dimensions(256, 1024, [256, 512]) == 256
    with pytest.raises(GatewayError, match="not configured as Matryoshka"):
        resolve_dimensions(256, 1024, [])
    with pytest.raises(GatewayError, match="256, 512, 1024"):
        resolve_dimensions(300, 1024, [256, 512])


def test_shorten_truncates_and_renormalizes() -> None:
    vectors = np.array([[3.0, 4.0, 12.0]], dtype=np.float32) / 13
    np.testing.assert_allclose(shorten(vectors, 2), [[0.6, 0.8]], atol=1e-6)
    assert shorten(vectors, 3) is vectors


def test_matryoshka_request_end_to_end() -> None:
    result = asyncio.run(service(FakeBackend(), matryoshka_dims=[4]).embed(request(input="x", dimensions=4)))
    assert result.vectors.shape == (1, 4)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-6)


def test_unknown_model_is_model_not_found() -> None:
    with pytest.raises(GatewayError) as info:
        asyncio.run(service(FakeBackend()).embed(request(model="gpt", input="x")))
    assert info.value.kind is ErrorKind.MODEL_NOT_FOUND and info.value.param == "model"


def test_too_many_inputs() -> None:
    with pytest.raises(GatewayError, match="3 items, more than the limit of 2"):
        asyncio.run(service(FakeBackend(), max_inputs=2).embed(request(input=["a", "b", "c"])))


def test_in_flight_limit_refuses_at_once() -> None:
    gate = asyncio.Event()

    async def run() -> GatewayError:
        svc = service(FakeBackend(hold=gate), max_concurrent_requests=1)
        first = asyncio.create_task(svc.embed(request(input="a")))
        await asyncio.sleep(0.01)
        with pytest.raises(GatewayError) as info:
            await svc.embed(request(input="b"))
        gate.set()
        await first
        await svc.embed(request(input="c"))  # the slot is free again
        return info.value

    assert asyncio.run(run()).kind is ErrorKind.OVERLOADED


def test_a_bad_text_is_named_by_its_index_in_the_callers_input() -> None:
    # Chunks of 2 unique texts; Triton names row 1 of the second chunk, i.e. unique text 3 = input[4].
    backend = FakeBackend(max_batch_size=2)
    svc = service(backend)

    async def failing(texts: list[str], truncate: str, deadline: Deadline) -> tuple[np.ndarray, np.ndarray]:
        if "long" in texts:
            raise GatewayError(ErrorKind.VALIDATION, f"text {texts.index('long')} has 600 tokens", param="input")
        return await FakeBackend.embed_texts(backend, texts, truncate, deadline)  # type: ignore[arg-type]

    backend.embed_texts = failing  # type: ignore[method-assign]
    with pytest.raises(GatewayError) as info:
        asyncio.run(svc.embed(request(input=["a", "b", "a", "c", "long"], truncate="NONE")))
    assert info.value.message == "input[4] has 600 tokens"


def test_health_reports_the_model_or_why_not() -> None:
    health = asyncio.run(service(FakeBackend(max_batch_size=16)).health())
    assert (health.max_batch_size, health.dim, health.status) == (16, DIM, "ok")
    down = FakeBackend(fail=GatewayError(ErrorKind.UNAVAILABLE, "Triton at x is unavailable"))
    with pytest.raises(GatewayError, match="unavailable"):
        asyncio.run(service(down).health())


def test_queries_get_the_served_models_instruction_unless_the_gateway_overrides_it() -> None:
    backend = FakeBackend()
    asyncio.run(service(backend).embed(request(input=["天气"], input_type="query")))
    asyncio.run(service(backend, query_instruction="Q:").embed(request(input=["天气"], input_type="query")))
    assert [texts for texts, _ in backend.text_calls] == [[backend.info.query_instruction + "天气"], ["Q:天气"]]


def test_every_triton_call_carries_the_requests_deadline() -> None:
    backend = FakeBackend(max_batch_size=2)
    svc = service(backend, request_timeout_s=7.0)
    asyncio.run(svc.embed(request(input=["a", "b", "c", "d", "e"])))
    asyncio.run(svc.embed(request(input=[[101, 5, 102]] * 3)))
    first, second = backend.deadlines[:3], backend.deadlines[3:]
    assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0]
    assert 0 < first[0].left_s() <= 7.0
