"""Unit tests of the wire models: request parsing and response encoding."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bge_client.gateway.protocol import (
    EmbeddingRequest,
    TextInputs,
    TokenInputs,
    decode_base64,
    encode_base64,
    encode_embedding_response,
)


def parse(**fields: object) -> EmbeddingRequest:
    return EmbeddingRequest.model_validate({"model": "m", **fields})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("今天天气怎么样", TextInputs(["今天天气怎么样"])),
        (["a", "b"], TextInputs(["a", "b"])),
        ([101, 102], TokenInputs([[101, 102]])),
        ([[101], [5, 6]], TokenInputs([[101], [5, 6]])),
    ],
)
def test_the_four_openai_input_shapes(value: object, expected: object) -> None:
    assert parse(input=value).inputs() == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "input is an empty string"),
        ([], "input is an empty list"),
        (["a", ""], "input[1] is an empty string"),
        ([[1], []], "input[1] is an empty list of token ids"),
        ([1, "a"], "input[1] must be an integer token id"),
        (["a", 1], "input[1] must be a string"),
        ([[1], 2], "input[1] must be a list of token ids"),
        ([True], "input[0] is bool"),
        ([1.5], "input[0] is float"),
        ({"text": "a"}, "got dict"),
        (None, "got NoneType"),
        ([-1], "not a valid token id"),
        ([2**40], "not a valid token id"),
        (["\ud800"], "lone surrogate"),
    ],
)
def test_invalid_input_gets_one_clear_message(value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse(input=value)
    assert message in info.value.errors()[0]["msg"]


def test_defaults_follow_openai_plus_extensions() -> None:
    request = parse(input="x")
    assert (request.encoding_format, request.dimensions, request.user) == ("float", None, None)
    assert (request.input_type, request.truncate) == (None, "END")


@pytest.mark.parametrize(
    "fields",
    [
        {"dimensions": "64"},
        {"dimensions": 0},
        {"dimensions": 1.5},
        {"encoding_format": "int8"},
        {"user": 1},
        {"input_type": "document"},
        {"truncate": "end"},
        {"model": 3},
    ],
)
def test_strict_fields(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse(input="x", **fields)


def test_unknown_fields_are_ignored_like_openai() -> None:
    assert parse(input="x", something_new=1).inputs() == TextInputs(["x"])


@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=64))
def test_base64_is_little_endian_float32(values: list[float]) -> None:
    vector = np.array(values, dtype=np.float32)
    text = encode_base64(vector)
    assert base64.b64decode(text) == vector.astype("<f4").tobytes()
    np.testing.assert_array_equal(decode_base64(text), vector)


def test_float_and_base64_responses_carry_identical_numbers() -> None:
    vectors = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    as_float = orjson.loads(encode_embedding_response(vectors, 12, "m", "float"))
    as_base64 = orjson.loads(encode_embedding_response(vectors, 12, "m", "base64"))
    for a, b in zip(as_float["data"], as_base64["data"], strict=True):
        # What the openai SDK does with base64: float32 from the bytes, then Python floats.
        assert a["embedding"] == np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4").tolist()


def test_response_shape_is_openais() -> None:
    body = orjson.loads(encode_embedding_response(np.eye(2, dtype=np.float32), 7, "bge", "float"))
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
            {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
        ],
        "model": "bge",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
