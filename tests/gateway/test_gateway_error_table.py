"""Unit tests of the error kinds, their one table, the renderer, and validation messages."""

from __future__ import annotations

import orjson
import pytest

from bge_client.gateway.app import validation_message
from bge_client.gateway.errors import ERROR_TABLE, ErrorKind, GatewayError, from_http_status, render
from bge_client.gateway.triton_backend import classify_triton_error


def test_every_kind_has_one_row() -> None:
    assert set(ERROR_TABLE) == set(ErrorKind)


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (ErrorKind.VALIDATION, 400),
        (ErrorKind.UNAUTHENTICATED, 401),
        (ErrorKind.MODEL_NOT_FOUND, 404),
        (ErrorKind.PAYLOAD_TOO_LARGE, 413),
        (ErrorKind.OVERLOADED, 429),
        (ErrorKind.UNAVAILABLE, 503),
        (ErrorKind.TIMEOUT, 504),
    ],
)
def test_documented_statuses(kind: ErrorKind, status: int) -> None:
    assert ERROR_TABLE[kind].status == status


def test_render_writes_openais_error_body() -> None:
    response = render(GatewayError(ErrorKind.MODEL_NOT_FOUND, "no such model", param="model"))
    assert response.status_code == 404
    assert orjson.loads(response.body) == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_overload_and_outage_say_when_to_retry_and_401_names_the_scheme() -> None:
    assert render(GatewayError(ErrorKind.OVERLOADED, "busy")).headers["retry-after"] == "1"
    assert render(GatewayError(ErrorKind.UNAVAILABLE, "restarting")).headers["retry-after"] == "3"
    assert "retry-after" not in render(GatewayError(ErrorKind.BACKEND, "bug")).headers
    assert render(GatewayError(ErrorKind.UNAUTHENTICATED, "key")).headers["www-authenticate"] == "Bearer"


def test_starlette_statuses_map_onto_kinds() -> None:
    assert from_http_status(404, "Not Found").kind is ErrorKind.NOT_FOUND
    wrong_method = from_http_status(405, "Method Not Allowed", {"Allow": "POST"})
    assert wrong_method.kind is ErrorKind.METHOD_NOT_ALLOWED
    assert render(wrong_method).headers["allow"] == "POST"
    assert from_http_status(418, "teapot").kind is ErrorKind.VALIDATION
    assert from_http_status(502, "bad gateway").kind is ErrorKind.BACKEND


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", ErrorKind.OVERLOADED),
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", ErrorKind.UNAVAILABLE),
        ("StatusCode.NOT_FOUND", "Request for unknown model", ErrorKind.UNAVAILABLE),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", ErrorKind.TIMEOUT),
        ("StatusCode.INVALID_ARGUMENT", "text 0 has 600 tokens, over the model's limit of 512", ErrorKind.VALIDATION),
        ("StatusCode.RESOURCE_EXHAUSTED", "", ErrorKind.OVERLOADED),
        ("StatusCode.INTERNAL", "onnxruntime failed", ErrorKind.BACKEND),
    ],
)
def test_triton_statuses_map_onto_kinds(status: str, message: str, kind: ErrorKind) -> None:
    assert classify_triton_error(status, message) is kind


def test_validation_messages_are_readable() -> None:
    assert validation_message([{"type": "missing", "loc": ("body",), "msg": "Field required"}]) == (
        "the request body is missing; send a JSON object",
        None,
    )
    assert validation_message(
        [{"type": "json_invalid", "loc": ("body", 7), "msg": "JSON decode error", "ctx": {"error": "Expecting value"}}]
    ) == ("the request body is not valid JSON (Expecting value)", None)
    assert validation_message(
        [
            {"type": "int_type", "loc": ("body", "dimensions"), "msg": "Input should be a valid integer"},
            {"type": "invalid_input", "loc": ("body", "input"), "msg": "input[0] is an empty string"},
        ]
    ) == ("dimensions: Input should be a valid integer; input[0] is an empty string", "dimensions")
