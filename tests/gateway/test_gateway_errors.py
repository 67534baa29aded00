"""Every documented error status, each produced by a real request to a real gateway process.

All bodies are OpenAI's `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from gateway_process import API_KEY, SERVED_NAME, Gateway
from support import TritonHandle as TritonLike


def post(gateway: Gateway, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/embeddings", json=body, timeout=30, **kwargs)  # type: ignore[arg-type]


def error_of(response: httpx.Response, status: int) -> dict[str, str | None]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize(
    ("body", "needle", "param"),
    [
        ({"model": SERVED_NAME, "input": ""}, "empty string", "input"),
        ({"model": SERVED_NAME, "input": []}, "empty list", "input"),
        ({"model": SERVED_NAME, "input": ["ok", ""]}, "input[1] is an empty string", "input"),
        ({"model": SERVED_NAME, "input": [[1, 2], []]}, "input[1] is an empty list", "input"),
        ({"model": SERVED_NAME, "input": 42}, "got int", "input"),
        ({"model": SERVED_NAME, "input": ["a", 1]}, "input[1] must be a string", "input"),
        ({"model": SERVED_NAME, "input": [1, -5]}, "not a valid token id", "input"),
        ({"model": SERVED_NAME}, "Field required", "input"),
        ({"model": SERVED_NAME, "input": ["x"] * 2049}, "more than the limit of 2048", "input"),
        ({"model": SERVED_NAME, "input": "x", "encoding_format": "int8"}, "'float' or 'base64'", "encoding_format"),
        ({"model": SERVED_NAME, "input": "x", "dimensions": 7}, "dimensions=7 is not supported", "dimensions"),
        ({"model": SERVED_NAME, "input": "x", "dimensions": "64"}, "valid integer", "dimensions"),
        ({"model": SERVED_NAME, "input": "x", "truncate": "MIDDLE"}, "'END', 'START' or 'NONE'", "truncate"),
        ({"model": SERVED_NAME, "input": [5, 999999]}, "check_embedding_ctx_length=False", "input"),
        ({"model": SERVED_NAME, "input": [101, 102], "input_type": "query"}, "needs text input", "input_type"),
    ],
    ids=lambda v: None if isinstance(v, dict) else str(v)[:30],
)
def test_invalid_input_is_400(gateway: Gateway, body: dict[str, object], needle: str, param: str) -> None:
    error = error_of(post(gateway, body), 400)
    assert needle in error["message"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_not_json_and_not_an_object_are_400(gateway: Gateway) -> None:
    url = f"{gateway.url}/v1/embeddings"
    broken = httpx.post(url, content=b"{nope", headers={"content-type": "application/json"})
    assert "not valid JSON" in error_of(broken, 400)["message"]
    assert "JSON object" in error_of(httpx.post(url, json=[1, 2]), 400)["message"]
    assert (
        "Content-Type"
        in error_of(httpx.post(url, content=b"{}", headers={"content-type": "text/plain"}), 400)["message"]
    )


def test_sdk_raises_bad_request_for_an_empty_string(gateway: Gateway) -> None:
    client = openai.Client(base_url=f"{gateway.url}/v1", api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=SERVED_NAME, input="")
    assert info.value.status_code == 400


def test_unknown_model_is_404_model_not_found(gateway: Gateway) -> None:
    client = openai.Client(base_url=f"{gateway.url}/v1", api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert info.value.code == "model_not_found"
    assert "text-embedding-3-small" in info.value.message and SERVED_NAME in info.value.message


def test_unknown_route_and_wrong_method(gateway: Gateway) -> None:
    assert error_of(httpx.get(f"{gateway.url}/v1/nothing"), 404)["code"] == "not_found"
    wrong = httpx.get(f"{gateway.url}/v1/embeddings")
    assert error_of(wrong, 405)["code"] == "method_not_allowed" and wrong.headers["allow"] == "POST"


def test_api_key_is_required_everywhere_but_health(restricted_gateway: Gateway) -> None:
    good = {"authorization": f"Bearer {API_KEY}"}
    body = {"model": SERVED_NAME, "input": "x"}
    assert error_of(post(restricted_gateway, body), 401)["code"] == "invalid_api_key"
    wrong = post(restricted_gateway, body, headers={"authorization": "Bearer nope"})
    assert error_of(wrong, 401)["type"] == "authentication_error"
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert post(restricted_gateway, body, headers=good).status_code == 200
    for path in ("/v1/models", "/metrics", "/openapi.json"):
        error_of(httpx.get(f"{restricted_gateway.url}{path}"), 401)
        assert httpx.get(f"{restricted_gateway.url}{path}", headers=good).status_code == 200
    assert httpx.get(f"{restricted_gateway.url}/health").status_code == 200
    sdk = openai.Client(base_url=f"{restricted_gateway.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.embeddings.create(model=SERVED_NAME, input="x")


def test_body_over_the_limit_is_413_by_content_length(restricted_gateway: Gateway) -> None:
    body = {"model": SERVED_NAME, "input": ["长文本" * 100] * 8}  # ~7 KiB > 4 KiB
    response = post(restricted_gateway, body, headers={"authorization": f"Bearer {API_KEY}"})
    error = error_of(response, 413)
    assert "over the limit of 4096 bytes" in error["message"] and error["code"] == "payload_too_large"


def test_body_over_the_limit_is_413_while_streaming(restricted_gateway: Gateway) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield b'{"model": "bge-large-zh-v1.5", "input": ['
        for _ in range(100):
            yield b'"' + b"x" * 100 + b'",'
        yield b'"end"]}'

    response = httpx.post(
        f"{restricted_gateway.url}/v1/embeddings",
        content=chunks(),
        headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert "more than 4096 bytes" in error_of(response, 413)["message"]


def test_matryoshka_dimensions_truncate_and_renormalize(restricted_gateway: Gateway, triton: TritonLike) -> None:
    sdk = openai.Client(base_url=f"{restricted_gateway.url}/v1", api_key=API_KEY, max_retries=0)
    full = np.array(sdk.embeddings.create(model=SERVED_NAME, input="天气").data[0].embedding)
    short = np.array(sdk.embeddings.create(model=SERVED_NAME, input="天气", dimensions=16).data[0].embedding)
    np.testing.assert_allclose(short, full[:16] / np.linalg.norm(full[:16]), atol=1e-6)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.embeddings.create(model=SERVED_NAME, input="天气", dimensions=20)
    assert f"16, 32, {triton.dim}" in info.value.message


def test_in_flight_limit_is_429_with_retry_after(burst_gateway: Gateway) -> None:
    body = {"model": SERVED_NAME, "input": [f"第{i}段：" + "很长的文本" * 20 for i in range(64)]}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return list(
                await asyncio.gather(*[client.post(f"{burst_gateway.url}/v1/embeddings", json=body) for _ in range(6)])
            )

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert "max_concurrent_requests=1" in error_of(refused, 429)["message"]


def test_triton_queue_full_is_429_with_retry_after(burst_gateway: Gateway) -> None:
    """The test Triton bounds its encoder queue at 64 requests; this gateway sends all 128 chunks of a
    2048-input request at once, and tokenizing usually outpaces encoding, so the encoder's queue overflows.
    When Triton happens to keep up, the request simply succeeds; a few tries make the overflow certain."""
    for attempt in range(5):
        texts = [f"队列{attempt}-{i}：" + "较长的文本" * 4 for i in range(2048)]
        refused = post(burst_gateway, {"model": SERVED_NAME, "input": texts})
        if refused.status_code != 200:
            break
    error = error_of(refused, 429)
    assert refused.headers["retry-after"] == "1"
    assert "queue is full" in error["message"] and error["code"] == "rate_limit_exceeded"
    # Coming back after Retry-After works once Triton's queue has drained (which also leaves Triton idle
    # for the next tests).
    deadline = time.monotonic() + 60
    while (status := post(burst_gateway, {"model": SERVED_NAME, "input": texts[:16]}).status_code) == 429:
        assert time.monotonic() < deadline, "Triton's queue never drained"
        time.sleep(float(refused.headers["retry-after"]))
    assert status == 200


def test_triton_down_is_503_on_health_and_embeddings(orphan_gateway: Gateway) -> None:
    health = error_of(httpx.get(f"{orphan_gateway.url}/health"), 503)
    assert "unavailable" in health["message"] and "Connection refused" in health["message"]
    sdk = openai.Client(base_url=f"{orphan_gateway.url}/v1", api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        sdk.embeddings.create(model=SERVED_NAME, input="x")
    assert info.value.status_code == 503
    assert "waiting for Triton model" in orphan_gateway.log()


def test_deadline_is_504(impatient_gateway: Gateway) -> None:
    assert httpx.get(f"{impatient_gateway.url}/health").status_code == 200  # control calls have their own deadline
    error = error_of(post(impatient_gateway, {"model": SERVED_NAME, "input": ["x"] * 16}), 504)
    assert "did not answer within 0.001 s" in error["message"] and error["code"] == "timeout"
