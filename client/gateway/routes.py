"""Thin HTTP routes: parse (FastAPI + protocol models), call the service, write the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from bge_client.gateway.protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    encode_embedding_response,
)
from bge_client.gateway.service import EmbeddingService

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


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=_errors(400, 401, 404, 413, 429, 503, 504))
async def create_embeddings(body: EmbeddingRequest, service: Service) -> Response:
    """OpenAI's embeddings endpoint."""
    result = await service.embed(body)
    content = encode_embedding_response(
        result.vectors, result.prompt_tokens, service.settings.public_model_name, body.encoding_format
    )
    return Response(content, media_type="application/json")


@router.get("/v1/models", response_model=ModelList, responses=_errors(401))
async def list_models(service: Service) -> ModelList:
    """The one served model, for clients that discover models first."""
    return ModelList(data=[ModelCard(id=service.settings.public_model_name, created=service.created)])


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
