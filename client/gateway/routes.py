"""Thin HTTP routes: parse (FastAPI + protocol models), call the service, write the answer."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.middleware import request_started
from bge_client.gateway.protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    Version,
    encode_embedding_response,
)
from bge_client.gateway.service import EmbeddingResult, EmbeddingService
from bge_client.gateway.tei_protocol import EmbedRequest, Info, TeiError

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer, all in OpenAI's error shape."""
    reasons = {
        400: "Invalid request",
        401: "Missing or wrong API key",
        404: "Unknown model",
        413: "Body too large",
        429: "Overloaded; see Retry-After",
        503: "Triton unavailable",
        504: "Triton deadline exceeded",
    }
    return {status: {"model": ErrorResponse, "description": reasons[status]} for status in statuses}


async def get_service(request: Request) -> EmbeddingService:
    return request.app.state.service


Service = Annotated[EmbeddingService, Depends(get_service)]

router = APIRouter()


def timing_headers(request: Request, result: EmbeddingResult, ignored: Sequence[str] = ()) -> dict[str, str]:
    """TEI's timing headers (milliseconds): total time in the gateway, and inside Triton.

    x-tokenization-time and x-queue-time are not sent: Triton reports those per model, not per request
    (its `nv_inference_queue_duration_us` and the tokenizer model's compute metrics)."""
    total_ms = (time.perf_counter() - request_started(request.scope)) * 1000
    headers = {
        "x-total-time": str(round(total_ms)),
        "x-compute-time": str(round(total_ms)),
        "x-inference-time": str(round(result.inference_s * 1000)),
        "x-compute-tokens": str(result.prompt_tokens),
        "x-compute-characters": str(result.characters),
    }
    if ignored:
        headers["x-ignored-fields"] = ignored_fields_header(ignored)
    return headers


MAX_IGNORED_NAMED = 10


def ignored_fields_header(names: Sequence[str]) -> str:
    """Up to MAX_IGNORED_NAMED unknown field names, percent-encoded (a header is latin-1, a JSON key anything)."""
    shown = [urllib.parse.quote(name[:64], safe="") for name in names[:MAX_IGNORED_NAMED]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f", (+{more} more)" if more else "")


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=_errors(400, 401, 404, 413, 429, 503, 504))
async def create_embeddings(body: EmbeddingRequest, service: Service, request: Request) -> Response:
    """OpenAI's embeddings endpoint. Unknown body fields are ignored and named in `X-Ignored-Fields`."""
    result = await service.embed(body)
    content = encode_embedding_response(
        result.vectors, result.prompt_tokens, service.settings.public_model_name, body.encoding_format
    )
    headers = timing_headers(request, result, body.unknown_fields())
    return Response(content, media_type="application/json", headers=headers)


@router.get("/v1/models", response_model=ModelList, responses=_errors(401))
async def list_models(service: Service) -> ModelList:
    """The one served model, for clients that discover models first."""
    return ModelList(data=[ModelCard(id=service.settings.public_model_name, created=service.created)])


@router.get("/v1/models/{model:path}", response_model=ModelCard, responses=_errors(401, 404))
async def retrieve_model(model: str, service: Service) -> ModelCard:
    """OpenAI's `models.retrieve`: the served model, or 404."""
    service.check_model(model)
    return ModelCard(id=service.settings.public_model_name, created=service.created)


@router.post("/tokenize", response_model=TokenizeResponse, responses=_errors(400, 401, 404, 429, 503, 504))
async def tokenize(body: TokenizeRequest, service: Service) -> TokenizeResponse:
    """vLLM's /tokenize: the ids the encoder sees for `prompt`, with the same truncation as embedding."""
    service.check_model(body.model)
    tokens = await service.tokenize(body.prompt, body.truncate)
    max_length = (await service.load_info()).max_length
    if not body.add_special_tokens:
        tokens = tokens[1:-1]
    return TokenizeResponse(count=len(tokens), max_model_len=max_length, tokens=tokens)


def _tei_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": TeiError, "description": f"TEI error body ({status})"} for status in statuses}


@router.post("/embed", response_model=list[list[float]], responses=_tei_errors(400, 401, 413, 429, 503, 504))
async def embed(body: EmbedRequest, service: Service, request: Request) -> Response:
    """text-embeddings-inference's /embed: a list of vectors, one per input."""
    if not body.normalize:
        raise GatewayError(
            ErrorKind.VALIDATION, "normalize=false is not supported: the exported model L2-normalizes", "normalize"
        )
    if body.prompt_name is not None:
        raise GatewayError(ErrorKind.VALIDATION, "prompt_name is not supported: the model has no prompts", "prompt")
    result = await service.embed_texts(body.texts(), body.truncation(), body.dimensions)
    content = orjson.dumps(result.vectors.astype(np.float64), option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, media_type="application/json", headers=timing_headers(request, result))


@router.get("/info", response_model=Info, responses=_tei_errors(401, 503))
async def info(service: Service) -> Info:
    """text-embeddings-inference's /info, from the served model's config."""
    return await service.tei_info()


@router.get("/version", response_model=Version, responses=_errors(401))
async def version(service: Service) -> Version:
    """This gateway's version (and Triton's, when it is reachable)."""
    return await service.version()


@router.get("/health", response_model=Health, responses=_errors(503))
async def health(service: Service) -> Health:
    """200 only when Triton reports the model ready; 503 says why not."""
    return await service.health()


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {PROMETHEUS_TYPE: {"schema": {"type": "string"}}}, "description": "Prometheus text"},
        **_errors(401),
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus exposition of the gateway's metrics."""
    return Response(request.app.state.metrics.render(), media_type=PROMETHEUS_TYPE)
