"""Limits and bad input: a clear 4xx, never a 5xx, never a hang; and a fuzz of Triton's own text input.

The common invalid requests (empty input, wrong types, > 2048 inputs, bad JSON, wrong content type,
unknown model) are in tests/gateway/test_gateway_errors.py, and the gateway's OpenAPI is fuzzed by
tests/gateway/test_gateway_fuzz.py; this module adds the edges those leave out: the exact body limit,
bytes that are not UTF-8, very large token counts and batches, pathological JSON, and random bytes sent
straight to the tokenizer model and the ensemble over gRPC.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from gateway.gateway_process import SERVED_NAME, Gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import GatewayFactory, assert_vectors, reference_vectors
from support import TritonHandle as SharedTriton
from tritonclient.utils import InferenceServerException

from bge_deploy.serving.stubs import StubProcess

BODY_LIMIT = 64 * 1024
FUZZ_EXAMPLES = 120
MODEL_JSON = b'{"model": "' + SERVED_NAME.encode() + b'", "input": "'


@pytest.fixture(scope="module")
def limited_gateway(start_gateway_for: GatewayFactory) -> Gateway:
    return start_gateway_for(MAX_BODY_BYTES=str(BODY_LIMIT))


@pytest.fixture(scope="module")
def input_gateway(start_gateway_for: GatewayFactory) -> Gateway:
    return start_gateway_for()


def body_of_size(size: int) -> bytes:
    """A valid request body of exactly `size` bytes (a long Chinese text, padded with JSON whitespace)."""
    text = "天气不错 ".encode() * ((size - len(MODEL_JSON) - 2) // len("天气不错 ".encode()))
    raw = MODEL_JSON + text + b'"}'
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_body_limit_is_exact(limited_gateway: Gateway, streamed: bool) -> None:
    """A body of exactly MAX_BODY_BYTES is served; one byte more is 413, whether or not its length is
    declared up front."""
    url = f"{limited_gateway.url}/v1/embeddings"
    headers = {"content-type": "application/json"}
    for size, status in ((BODY_LIMIT, 200), (BODY_LIMIT + 1, 413)):
        payload = body_of_size(size)
        assert len(payload) == size
        content: bytes | Iterator[bytes] = iter([payload[:4096], payload[4096:]]) if streamed else payload
        response = httpx.post(url, content=content, headers=headers, timeout=30)
        assert response.status_code == status, response.text[:300]
        if status == 413:
            assert response.json()["error"]["code"] == "payload_too_large"


def doc(input_json: str, model: str = SERVED_NAME, **fields_json: str) -> bytes:
    """A request body written by hand, so it can be wrong in ways a JSON library would not write."""
    parts = [f'"model": "{model}"', f'"input": {input_json}', *(f'"{k}": {v}' for k, v in fields_json.items())]
    return ("{" + ", ".join(parts) + "}").encode()


HUGE_ROW = "[101, " + ", ".join(["2000"] * 100_000) + ", 102]"
LONG_TEXT = '"' + "天 " * 20_000 + '"'
MANY_INPUTS = "[" + ", ".join(['"a"'] * 100_000) + "]"
NESTED = "[" * 100_000 + "]" * 100_000
CASES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    # (id, body, extra headers, status, part of the message)
    ("not-utf8", MODEL_JSON + b'\xff\xfe\xfa"}', {}, 400, "can't decode byte 0xff"),
    ("lone-surrogate", doc('"ab\\ud800cd"'), {}, 400, "lone surrogate"),
    ("100k-token-ids-truncate-none", doc(HUGE_ROW, truncate='"NONE"'), {}, 400, "100002 tokens"),
    ("20k-token-text-truncate-none", doc(LONG_TEXT, truncate='"NONE"'), {}, 400, "over the model's limit of 512"),
    ("100k-inputs", doc(MANY_INPUTS), {}, 400, "more than the limit of 2048"),
    ("deeply-nested", doc(NESTED), {}, 400, "recursion"),
    ("5000-digit-token-id", doc("[" + "9" * 5000 + "]"), {}, 400, "digits"),
    ("float-token-ids", doc("[1.5, 2.0]"), {}, 400, "input[0] is float"),
    ("nan", doc("NaN"), {}, 400, ""),
    ("null-input", doc("null"), {}, 400, "input"),
    ("object-input", doc('{"text": "a"}'), {}, 400, "got dict"),
    ("empty-body", b"", {}, 400, "missing"),
    ("form-encoded", b"model=bge&input=a", {"content-type": "application/x-www-form-urlencoded"}, 400, "Content-Type"),
    ("multipart", b"--x\r\n\r\na\r\n--x--", {"content-type": "multipart/form-data; boundary=x"}, 400, ""),
    ("no-content-type", doc('"a"'), {"content-type": ""}, 400, ""),
    ("truncate-lowercase", doc('"a"', truncate='"none"'), {}, 400, "truncate"),
    ("dimensions-zero", doc('"a"', dimensions="0"), {}, 400, "dimensions"),
    ("dimensions-huge", doc('"a"', dimensions=str(10**12)), {}, 400, "dimensions"),
    ("100kb-model-name", doc('"a"', model="m" * 100_000), {}, 404, "does not exist"),
]


@pytest.mark.parametrize(("body", "headers", "status", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_4xx_at_once(
    input_gateway: Gateway, body: bytes, headers: dict[str, str], status: int, needle: str
) -> None:
    sent = {"content-type": "application/json", **headers}
    start = time.monotonic()
    response = httpx.post(
        f"{input_gateway.url}/v1/embeddings", content=body, headers={k: v for k, v in sent.items() if v}, timeout=30
    )
    elapsed = time.monotonic() - start
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and needle in error["message"], error
    assert elapsed < 5.0
    assert len(response.content) < 2_000  # nothing sent is echoed back whole (a 100 KB model name included)


def test_strange_but_valid_text_is_embedded(input_gateway: Gateway, triton: SharedTriton) -> None:
    """NUL, zero-width and control characters, emoji, a lone combining mark: valid Unicode, so 200."""
    texts = ["\u0000", "a\u200bb", "\x07\x1b[31m", "😀" * 600, "\u0301", "\ufeff中文"]
    expected = reference_vectors(triton.grpc_url, triton.model_name, texts, triton.max_batch_size)
    response = httpx.post(f"{input_gateway.url}/v1/embeddings", json={"model": SERVED_NAME, "input": texts}, timeout=30)
    assert_vectors(response, texts, expected)


# -- Triton's own input, fuzzed over gRPC -------------------------------------------------------------------

text_item = st.one_of(
    st.binary(max_size=200),  # mostly not UTF-8
    st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),  # lone surrogates included
    st.integers(1_000, 40_000).map(lambda n: "长".encode() * n),  # far over 512 tokens
)
truncate_value = st.one_of(
    st.none(),
    st.sampled_from(["END", "START", "NONE", "end", "", "MIDDLE"]),
    st.integers(-5, 5),
    st.booleans(),
    st.text(max_size=10),
)


def infer_raw(
    client: grpcclient.InferenceServerClient, model: str, rows: list[bytes], truncate: object
) -> grpcclient.InferResult:
    tensor = grpcclient.InferInput("text", [len(rows), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(rows, dtype=np.object_).reshape(len(rows), 1))
    parameters = None if truncate is None else {"truncate": truncate}
    return client.infer(model, [tensor], parameters=parameters, client_timeout=30)


@pytest.mark.parametrize("role", ["tokenizer", "ensemble"])
def test_random_bytes_never_crash_the_tokenizer(triton: SharedTriton, role: str) -> None:
    """Random rows (0-20 of them, not UTF-8, huge, lone surrogates) and random `truncate` values, straight
    to Triton: each answer is a result or INVALID_ARGUMENT, the Python backend stubs survive, and a
    normal request gets the same vector afterwards."""
    model = triton.model_name if role == "ensemble" else f"{triton.model_name}-tokenizer"
    stubs = StubProcess.children_of(triton.server.process.pid)
    texts = ["模糊测试之后", "after fuzzing"]
    before = reference_vectors(triton.grpc_url, triton.model_name, texts, triton.max_batch_size)
    statuses: dict[str, int] = {}

    with grpcclient.InferenceServerClient(triton.grpc_url) as client:

        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(rows=st.lists(text_item, min_size=0, max_size=20), truncate=truncate_value)
        def exercise(rows: list[bytes], truncate: object) -> None:
            try:
                result = infer_raw(client, model, rows, truncate)
            except InferenceServerException as exc:
                status = str(exc.status())
                assert status == "StatusCode.INVALID_ARGUMENT", f"{status}: {exc.message()}"
                assert exc.message(), "an error without a message"
            else:
                status = "OK"
                assert 1 <= len(rows) <= triton.max_batch_size
                if role == "ensemble":
                    vectors = result.as_numpy("embedding")
                    assert vectors.shape[0] == len(rows) and np.isfinite(vectors).all()
                else:
                    assert result.as_numpy("input_ids").shape[0] == len(rows)
                    assert (result.as_numpy("num_tokens") >= 2).all()
            statuses[status] = statuses.get(status, 0) + 1

        exercise()

    print(f"\n{role} fuzz: {statuses}")
    assert statuses.get("OK") and statuses.get("StatusCode.INVALID_ARGUMENT")
    assert all(stub.is_running() for stub in stubs)  # no stub crashed (Triton would not restart it)
    after = reference_vectors(triton.grpc_url, triton.model_name, texts, triton.max_batch_size)
    for text in texts:
        np.testing.assert_allclose(after[text], before[text], atol=1e-5)


FIVE_MB_TEXT = "天气" * 873_814  # 5.24 MB of UTF-8, 1.75M characters


def test_a_five_megabyte_text_is_refused_at_once_by_the_gateway(input_gateway: Gateway) -> None:
    start = time.monotonic()
    response = httpx.post(
        f"{input_gateway.url}/v1/embeddings", json={"model": SERVED_NAME, "input": ["ok", FIVE_MB_TEXT]}, timeout=30
    )
    elapsed = time.monotonic() - start
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("input[1] has 1747628 characters, over the limit of 100000") and "split" in message
    assert elapsed < 1.0, elapsed


def test_a_five_megabyte_text_sent_to_triton_is_cut_in_the_tokenizer_without_reading_it_all(
    triton: SharedTriton,
) -> None:
    """Straight to the ensemble (no gateway cap): answered within 1 s, the tokenizer stub grows < 100 MB.
    Tokenizing it whole took 14 s and +3.4 GB here; the tokenizer cuts long texts from a window instead."""
    from bge_deploy.serving.process import rss_bytes

    stubs = StubProcess.children_of(triton.server.process.pid)
    (stub,) = [s for s in stubs if s.model == f"{triton.model_name}-tokenizer"]
    before = rss_bytes(stub.pid)
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        start = time.monotonic()
        result = infer_raw(client, triton.model_name, [FIVE_MB_TEXT.encode()], "END")
        elapsed = time.monotonic() - start
        with pytest.raises(InferenceServerException, match="more than 512 tokens"):
            infer_raw(client, triton.model_name, [FIVE_MB_TEXT.encode()], "NONE")
    grown = rss_bytes(stub.pid) - before
    assert result.as_numpy("num_tokens").tolist() == [[512]]
    assert elapsed < 1.0, elapsed
    assert grown < 100 * 2**20, grown / 2**20
