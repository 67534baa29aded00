"""Unit tests of the app's guards and handlers, in-process with a stand-in backend.

The same behaviours are covered against real processes in test_gateway_errors.py; these pin down the
edge cases cheaply (exact Content-Length handling, streaming bodies, OpenAPI contents).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_backend import FakeBackend
from fastapi.testclient import TestClient

from bge_client.gateway.app import create_app
from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.settings import GatewaySettings

MODEL = "bge-large-zh-v1.5"


def make_client(backend: FakeBackend | None = None, **settings: object) -> TestClient:
    app = create_app(GatewaySettings(**settings), backend=backend or FakeBackend())  # type: ignore[arg-type]
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client(max_body_bytes=200) as test_client:
        yield test_client


def test_embeddings_round_trip(client: TestClient) -> None:
    body = client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]}).json()
    assert [d["index"] for d in body["data"]] == [0, 1] and body["usage"]["prompt_tokens"] == 6


def test_body_at_the_limit_passes_and_one_byte_more_is_413(client: TestClient) -> None:
    base = b'{"model": "bge-large-zh-v1.5", "input": "'

    def body(size: int) -> bytes:
        return base + b"x" * (size - len(base) - 2) + b'"}'

    headers = {"content-type": "application/json"}
    assert client.post("/v1/embeddings", content=body(200), headers=headers).status_code == 200
    refused = client.post("/v1/embeddings", content=body(201), headers=headers)
    assert refused.status_code == 413 and "201 bytes" in refused.json()["error"]["message"]


def test_streamed_body_is_measured_as_it_arrives(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "bge-large-zh-v1.5", "input": "'
        for _ in range(10):
            yield b"x" * 50
        yield b'"}'

    refused = client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert refused.status_code == 413 and "more than 200 bytes" in refused.json()["error"]["message"]


def test_bad_content_length_is_400(client: TestClient) -> None:
    response = client.post("/v1/embeddings", content=b"{}", headers={"content-length": "abc"})
    assert response.status_code == 400


def test_api_key_checks_the_bearer_token() -> None:
    with make_client(api_key="k") as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"authorization": "Basic k"}).status_code == 401
        assert client.get("/v1/models", headers={"authorization": "Bearer kk"}).status_code == 401
        assert client.get("/v1/models", headers={"authorization": "bearer k"}).status_code == 200
        assert client.get("/health").status_code == 200
        metrics = client.get("/metrics", headers={"authorization": "Bearer k"}).text
        assert 'bge_gateway_errors_total{reason="unauthenticated"} 3.0' in metrics


def test_backend_errors_render_with_their_status() -> None:
    busy = FakeBackend()
    with make_client(busy) as client:
        busy.fail = GatewayError(ErrorKind.OVERLOADED, "Triton's queue is full")
        response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
        assert response.status_code == 429 and response.headers["retry-after"] == "1"


def test_unexpected_exceptions_are_500_in_the_same_shape() -> None:
    backend = FakeBackend()

    async def broken(*_: object) -> None:
        raise RuntimeError("bug")

    backend.embed_texts = broken  # type: ignore[assignment, method-assign]
    with make_client(backend) as client:
        response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "internal error: RuntimeError",
        "type": "server_error",
        "param": None,
        "code": "backend_error",
    }


def test_openapi_documents_openai_errors_not_fastapis_422(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    responses = schema["paths"]["/v1/embeddings"]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "404", "413", "429", "503", "504"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
