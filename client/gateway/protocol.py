"""OpenAI embeddings wire models (names and defaults as in OpenAI's spec) plus our two extensions.

Requests turn themselves into internal inputs (`TextInputs` / `TokenInputs`); responses are written
straight from numpy with orjson, because building 2048 x 1024 pydantic floats would dominate latency.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import numpy as np
import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, StrictBool, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from bge_model_repository.contract import DEFAULT_TRUNCATE, Truncate

MAX_TOKEN_ID = 2**31 - 1
"""Bound for token ids in the schema: keeps them in int64 (and int32) without an overflow."""

EncodingFormat = Literal["float", "base64"]
DEFAULT_ENCODING_FORMAT: EncodingFormat = "float"
NullMeansDefault = BeforeValidator(lambda value: DEFAULT_ENCODING_FORMAT if value is None else value)
"""OpenAI treats `"encoding_format": null` as the default (some clients send it so)."""
InputType = Literal["query", "passage"]

NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
TokenId = Annotated[StrictInt, Field(ge=0, le=MAX_TOKEN_ID)]
TokenIds = Annotated[list[TokenId], Field(min_length=1)]
EmbeddingInput = Union[  # noqa: UP007 - a Union keeps the order of the OpenAPI `anyOf` readable
    NonEmptyStr,
    Annotated[list[NonEmptyStr], Field(min_length=1)],
    TokenIds,
    Annotated[list[TokenIds], Field(min_length=1)],
]

_INPUT_SHAPES = "a string, a list of strings, a list of token ids, or a list of token-id lists"


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_input", message)


def _check_text(text: str, where: str) -> None:
    if not text:
        raise _invalid(f"{where} is an empty string; every input needs at least one character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(f"{where} is not valid Unicode (it holds a lone surrogate)") from None


def _check_ids(ids: list[Any], where: str) -> None:
    if not ids:
        raise _invalid(f"{where} is an empty list of token ids")
    for j, token in enumerate(ids):
        if not isinstance(token, int) or isinstance(token, bool):
            raise _invalid(f"{where}[{j}] must be an integer token id, got {type(token).__name__}")
        if not 0 <= token <= MAX_TOKEN_ID:
            raise _invalid(f"{where}[{j}] = {token} is not a valid token id (0..{MAX_TOKEN_ID})")


def parse_input(value: Any) -> str | list[str] | list[int] | list[list[int]]:
    """Validate OpenAI's `input` with one clear message per mistake (pydantic's union errors are not)."""
    if isinstance(value, str):
        _check_text(value, "input")
        return value
    if not isinstance(value, list):
        raise _invalid(f"input must be {_INPUT_SHAPES}; got {type(value).__name__}")
    if not value:
        raise _invalid("input is an empty list; send at least one input")
    first = value[0]
    if isinstance(first, str):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise _invalid(f"input[{i}] must be a string like input[0], got {type(item).__name__}")
            _check_text(item, f"input[{i}]")
        return value
    if isinstance(first, int) and not isinstance(first, bool):
        _check_ids(value, "input")
        return value
    if isinstance(first, list):
        for i, item in enumerate(value):
            if not isinstance(item, list):
                raise _invalid(f"input[{i}] must be a list of token ids like input[0], got {type(item).__name__}")
            _check_ids(item, f"input[{i}]")
        return value
    raise _invalid(f"input must be {_INPUT_SHAPES}; input[0] is {type(first).__name__}")


class OpenAIBaseModel(BaseModel):
    """Strict: "5" is not a number and 1 is not a string, as in OpenAI's API."""

    model_config = ConfigDict(strict=True, extra="ignore")


@dataclass(frozen=True)
class TextInputs:
    """Texts for the ensemble (tokenized inside Triton)."""

    texts: list[str]


@dataclass(frozen=True)
class TokenInputs:
    """Token-id rows for the encoder, used as given (no [CLS]/[SEP] added)."""

    ids: list[list[int]]


class EmbeddingRequest(OpenAIBaseModel):
    """`POST /v1/embeddings` body: OpenAI's fields plus `input_type` and `truncate`.

    Unknown fields are kept (``model_extra``) to be named back to the caller, not rejected: clients
    and proxies add provider-specific fields, and a misspelt one must not pass unnoticed either.
    """

    model_config = ConfigDict(strict=True, extra="allow")

    model: StrictStr = Field(description="Served model name, e.g. bge-large-zh-v1.5.")
    input: Annotated[EmbeddingInput, PlainValidator(parse_input, json_schema_input_type=EmbeddingInput)] = Field(
        description=f"Text or token ids to embed: {_INPUT_SHAPES}."
    )
    encoding_format: Annotated[EncodingFormat, NullMeansDefault] = Field(
        DEFAULT_ENCODING_FORMAT, description="`float` lists or `base64` of little-endian float32 bytes (null: float)."
    )
    dimensions: Annotated[StrictInt, Field(gt=0)] | None = Field(
        None, description="Output size; the native size, or a configured Matryoshka size."
    )
    user: StrictStr | None = Field(None, description="End-user id (accepted for compatibility).")
    input_type: InputType | None = Field(
        None, description="`query` prepends the retrieval instruction; `passage` (or none) does not."
    )
    truncate: Truncate = Field(
        DEFAULT_TRUNCATE,
        strict=False,  # the enum's string values, as JSON has them
        description="Over-long input: cut its END or START, or NONE to reject it.",
    )

    def inputs(self) -> TextInputs | TokenInputs:
        """The request's input as one of the two internal shapes."""
        value = self.input
        if isinstance(value, str):
            return TextInputs([value])
        if isinstance(value[0], str):
            return TextInputs(list(value))  # type: ignore[arg-type]
        if isinstance(value[0], int):
            return TokenInputs([list(value)])  # type: ignore[arg-type]
        return TokenInputs([list(row) for row in value])  # type: ignore[union-attr]

    def unknown_fields(self) -> list[str]:
        """Fields of the body this API does not have (ignored), e.g. a misspelt `encoding_fromat`."""
        return sorted(self.model_extra or {})


class TokenizeRequest(OpenAIBaseModel):
    """`POST /tokenize` (vLLM's shape): the model's tokens for one text, truncated as for embedding."""

    model: StrictStr | None = Field(None, description="Served model name (optional, as in vLLM).")
    prompt: NonEmptyStr = Field(description="The text to tokenize.")
    add_special_tokens: StrictBool = Field(True, description="Keep [CLS]/[SEP] (what the encoder sees).")
    truncate: Truncate = Field(DEFAULT_TRUNCATE, strict=False, description="As for /v1/embeddings.")


class TokenizeResponse(OpenAIBaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class Version(OpenAIBaseModel):
    """`GET /version`: this gateway's version and the Triton behind it."""

    version: str
    triton_version: str | None = None


class Embedding(OpenAIBaseModel):
    """One vector: a list of floats, or a base64 string of float32 bytes."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(OpenAIBaseModel):
    """Tokens as counted by the model's tokenizer (after truncation); embeddings have no completion."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(OpenAIBaseModel):
    """`POST /v1/embeddings` answer; `data[i].index == i`, in input order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(OpenAIBaseModel):
    """An entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "bge-triton"


class ModelList(OpenAIBaseModel):
    """`GET /v1/models` answer: the one served model."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(OpenAIBaseModel):
    """OpenAI's error object (rendered by `errors.render`; here for the OpenAPI schema)."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(OpenAIBaseModel):
    """Every non-2xx body."""

    error: ErrorInfo


class Health(OpenAIBaseModel):
    """`GET /health` when Triton reports the model ready."""

    status: Literal["ok"] = "ok"
    model: str
    triton_model: str
    max_batch_size: int
    dim: int


def encode_base64(vector: np.ndarray) -> str:
    """OpenAI's base64 format: the vector's little-endian float32 bytes, base64-encoded."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_base64(text: str) -> np.ndarray:
    """Inverse of `encode_base64` (what the openai SDK does on the client side)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def encode_embedding_response(
    vectors: np.ndarray, prompt_tokens: int, model: str, encoding_format: EncodingFormat
) -> bytes:
    """`EmbeddingResponse` JSON for float32 [n, D] `vectors`, rows in input order.

    Floats are written as the exact float64 value of each float32 so a client that parses the JSON
    gets bit-for-bit the numbers that base64 would have given it.
    """
    if encoding_format == "base64":
        items: list[Any] = [encode_base64(row) for row in vectors]
    else:
        items = list(vectors.astype(np.float64))
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": item} for i, item in enumerate(items)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
