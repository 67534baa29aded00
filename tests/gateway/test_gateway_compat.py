"""What TEI / vLLM / OpenAI users reach for, against a real gateway and tritonserver, with real clients.

openai (models.retrieve, encoding_format null), huggingface_hub's InferenceClient (TEI's /embed), and
plain HTTP for /tokenize, /info, /version, X-Request-Id, the timing headers and unknown fields.
"""

from __future__ import annotations

import importlib.metadata

import httpx
import numpy as np
import openai
import pytest
from gateway_process import SERVED_NAME, Gateway

WEATHER = "今天天气怎么样"
WEATHER_IDS = [101, 791, 1921, 1921, 3698, 2582, 720, 3416, 102]  # per ../shared/models' tokenizer
LONG_TEXT = "今" * 600  # 602 tokens with [CLS]/[SEP]


@pytest.fixture(scope="module")
def sdk(gateway: Gateway) -> openai.Client:
    return openai.Client(base_url=f"{gateway.url}/v1", api_key="EMPTY", max_retries=0)


@pytest.fixture(scope="module")
def http(gateway: Gateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        yield client


def _reference(sdk: openai.Client, text: str) -> np.ndarray:
    return np.array(sdk.embeddings.create(model=SERVED_NAME, input=text, encoding_format="float").data[0].embedding)


def test_models_retrieve(sdk: openai.Client) -> None:
    model = sdk.models.retrieve(SERVED_NAME)
    assert model.id == SERVED_NAME and model.object == "model"
    with pytest.raises(openai.NotFoundError) as info:
        sdk.models.retrieve("BAAI/not-served")
    assert "not-served" in info.value.message and SERVED_NAME in info.value.message


def test_encoding_format_null_is_the_default(sdk: openai.Client, http: httpx.Client) -> None:
    raw = http.post("/v1/embeddings", json={"model": SERVED_NAME, "input": WEATHER, "encoding_format": None})
    assert raw.status_code == 200, raw.text
    vector = raw.json()["data"][0]["embedding"]
    assert isinstance(vector, list)
    np.testing.assert_allclose(vector, _reference(sdk, WEATHER), atol=1e-6)
    through_sdk = sdk.embeddings.create(model=SERVED_NAME, input=WEATHER, encoding_format=None)  # type: ignore[arg-type]
    np.testing.assert_allclose(through_sdk.data[0].embedding, vector, atol=1e-6)


def test_request_id_is_echoed_or_made(http: httpx.Client) -> None:
    body = {"model": SERVED_NAME, "input": WEATHER}
    given = http.post("/v1/embeddings", json=body, headers={"X-Request-Id": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    made = http.post("/v1/embeddings", json=body)
    other = http.post("/v1/embeddings", json=body)
    assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"] != other.headers["x-request-id"]
    refused = http.post("/v1/embeddings", json={"model": SERVED_NAME, "input": ""}, headers={"X-Request-Id": "e-1"})
    assert refused.status_code == 400 and refused.headers["x-request-id"] == "e-1"
    injected = http.post("/v1/embeddings", json=body, headers={"X-Request-Id": "a b\tc"})
    assert injected.headers["x-request-id"] != "a b\tc"  # not a plain token: replaced, not echoed


def test_timing_headers_follow_tei(http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", json={"model": SERVED_NAME, "input": [WEATHER, "hello"]})
    usage = response.json()["usage"]["prompt_tokens"]
    headers = response.headers
    assert int(headers["x-compute-tokens"]) == usage
    assert int(headers["x-compute-characters"]) == len(WEATHER) + len("hello")
    total, inference = int(headers["x-total-time"]), int(headers["x-inference-time"])
    assert 0 <= inference <= total and int(headers["x-compute-time"]) == total


def test_unknown_fields_are_named_back_and_logged_once(gateway: Gateway, http: httpx.Client) -> None:
    body = {"model": SERVED_NAME, "input": WEATHER, "encoding_fromat": "base64", "dimension": 8}
    first = http.post("/v1/embeddings", json=body)
    second = http.post("/v1/embeddings", json=body)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-ignored-fields"] == "dimension, encoding_fromat"
    assert isinstance(first.json()["data"][0]["embedding"], list)  # the misspelt base64 request was not applied
    assert "x-ignored-fields" not in http.post("/v1/embeddings", json={"model": SERVED_NAME, "input": "x"}).headers
    lines = [line for line in gateway.log().splitlines() if "encoding_fromat" in line]
    assert len(lines) == 1 and "ignored" in lines[0], lines


def test_tokenize_is_what_the_encoder_sees(http: httpx.Client) -> None:
    answer = http.post("/tokenize", json={"model": SERVED_NAME, "prompt": WEATHER}).json()
    assert answer == {"count": 9, "max_model_len": 512, "tokens": WEATHER_IDS}
    bare = http.post("/tokenize", json={"prompt": WEATHER, "add_special_tokens": False}).json()
    assert bare["tokens"] == WEATHER_IDS[1:-1] and bare["count"] == 7
    cut = http.post("/tokenize", json={"prompt": LONG_TEXT}).json()
    assert cut["count"] == 512 and cut["tokens"][0] == 101 and cut["tokens"][-1] == 102
    refused = http.post("/tokenize", json={"prompt": LONG_TEXT, "truncate": "NONE"})
    assert refused.status_code == 400
    assert "prompt has 602 tokens" in refused.json()["error"]["message"]
    assert http.post("/tokenize", json={"model": "other", "prompt": "x"}).status_code == 404


def test_tei_embed_with_huggingface_hubs_client(
    gateway: Gateway, sdk: openai.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import InferenceClient, constants

    # CI runs with HF_HUB_OFFLINE=1 (no hub downloads), which also blocks this loopback call: lift it here only.
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)

    client = InferenceClient(model=f"{gateway.url}/embed")
    vectors = np.asarray(client.feature_extraction(WEATHER))
    np.testing.assert_allclose(vectors.reshape(-1), _reference(sdk, WEATHER), atol=1e-6)
    cut = np.asarray(client.feature_extraction(LONG_TEXT, truncate=True, truncation_direction="left"))
    assert cut.shape[-1] == vectors.shape[-1]


def test_tei_embed_shapes_and_errors(http: httpx.Client, sdk: openai.Client) -> None:
    one = http.post("/embed", json={"inputs": WEATHER})
    assert one.status_code == 200 and len(one.json()) == 1
    two = http.post("/embed", json={"inputs": [WEATHER, "hello"]}).json()
    np.testing.assert_allclose(two[0], _reference(sdk, WEATHER), atol=1e-6)
    too_long = http.post("/embed", json={"inputs": LONG_TEXT})  # TEI refuses unless truncate is set
    assert too_long.status_code == 400
    assert too_long.json()["error_type"] == "Validation" and "602 tokens" in too_long.json()["error"]
    assert http.post("/embed", json={"inputs": LONG_TEXT, "truncate": True}).status_code == 200
    unnormalized = http.post("/embed", json={"inputs": WEATHER, "normalize": False})
    assert unnormalized.status_code == 400 and "normalize" in unnormalized.json()["error"]
    empty = http.post("/embed", json={"inputs": []})
    assert empty.status_code == 400 and set(empty.json()) == {"error", "error_type"}


def test_tei_info_and_version(http: httpx.Client, gateway: Gateway) -> None:
    info = http.get("/info").json()
    assert info["model_id"] == SERVED_NAME and info["max_input_length"] == 512
    assert info["model_type"] == {"embedding": {"pooling": "cls"}} and info["model_dtype"] == "float32"
    assert info["max_client_batch_size"] == 2048 and info["version"] == importlib.metadata.version("bge-triton")
    version = http.get("/version").json()
    assert version["version"] == info["version"] and version["triton_version"].startswith("2.")


def test_gateway_metrics_parse_and_follow_prometheus_naming(http: httpx.Client) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    http.post("/v1/embeddings", json={"model": SERVED_NAME, "input": [WEATHER, "hello"]})
    http.get(f"/v1/models/{SERVED_NAME}")
    families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    samples = [s for family in families.values() for s in family.samples]
    assert not [s.name for s in samples if s.name.endswith("_created")]
    for family in families.values():
        assert family.name.startswith("bge_gateway_"), family.name
        if family.type == "counter":
            assert all(s.name == family.name + "_total" for s in family.samples), family.name
        if family.type == "histogram":
            assert {s.name.removeprefix(family.name) for s in family.samples} == {"_bucket", "_sum", "_count"}
    assert families["bge_gateway_request_duration_seconds"].type == "histogram"
    tokens = {s.name: s.value for s in families["bge_gateway_request_tokens"].samples if not s.labels}
    assert tokens["bge_gateway_request_tokens_count"] >= 1 and tokens["bge_gateway_request_tokens_sum"] >= 9 + 3
    routes = {s.labels.get("route") for s in families["bge_gateway_requests"].samples}
    assert "/v1/models/{model}" in routes and SERVED_NAME not in str(routes)  # one label, whatever the id
