"""Builds the FastAPI app: routes, guards, error handlers and the Triton connection's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from bge_client.gateway.admission import AdmissionDoor, AdmissionMiddleware
from bge_client.gateway.errors import ErrorKind, GatewayError, from_http_status, render
from bge_client.gateway.inference import Backend
from bge_client.gateway.metrics import Metrics
from bge_client.gateway.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    CancelOnDisconnectMiddleware,
    MetricsMiddleware,
    RequestIdMiddleware,
    request_id_of,
)
from bge_client.gateway.routes import router
from bge_client.gateway.service import EmbeddingService
from bge_client.gateway.settings import GatewaySettings
from bge_client.gateway.triton_backend import TritonBackend

log = logging.getLogger("bge-gateway")


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """FastAPI/pydantic validation errors -> one readable message and the offending parameter."""
    parts: list[str] = []
    param: str | None = None
    for error in errors[:3]:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        kind = error.get("type", "")
        if kind == "json_invalid":
            reason = error.get("ctx", {}).get("error", "decode error")
            parts.append(f"the request body is not valid JSON ({reason})")
            continue
        if not loc:
            if kind == "missing":
                parts.append("the request body is missing; send a JSON object")
            elif isinstance(error.get("input"), bytes):
                parts.append("the request body must be JSON sent with Content-Type: application/json")
            else:
                parts.append("the request body must be a JSON object")
            continue
        parts.append(error["msg"] if kind == "invalid_input" else f"{'.'.join(loc)}: {error.get('msg')}")
        param = param or loc[0]
    return "; ".join(dict.fromkeys(parts)), param


def _without_422(app: FastAPI) -> dict[str, Any]:
    """OpenAPI without FastAPI's default 422 entries: validation errors are 400s in OpenAI's shape."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: GatewaySettings, backend: Backend | None = None) -> FastAPI:
    """The gateway app; `backend` defaults to Triton at `settings.triton_url` (created on start-up)."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Created here, inside the running loop, because a grpc.aio channel belongs to its loop.
        used = backend or TritonBackend(settings.triton_url, settings.model_name, settings.request_timeout_s)
        service = EmbeddingService(settings, used, metrics)
        app.state.service = service
        waiting = asyncio.create_task(service.wait_until_ready())
        try:
            yield
        finally:
            # uvicorn runs this after its graceful drain: every request it accepted has been answered.
            log.info("stopped: %s", metrics.summary())
            waiting.cancel()
            await service.drain(settings.request_timeout_s)  # closing the channel would cancel them
            await used.close()

    app = FastAPI(
        title="bge-triton gateway",
        version="0.1.0",
        lifespan=lifespan,
        summary="OpenAI-compatible embeddings API in front of Triton",
    )
    app.state.metrics = metrics
    app.include_router(router)
    app.openapi = lambda: _without_422(app)  # type: ignore[method-assign]

    def respond(request: Request, error: GatewayError) -> Response:
        metrics.count_error(error.kind.value)
        return render(error, request.url.path)

    @app.exception_handler(GatewayError)
    async def on_gateway_error(request: Request, exc: GatewayError) -> Response:
        return respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        message, param = validation_message(list(exc.errors()))
        return respond(request, GatewayError(ErrorKind.VALIDATION, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = str(exc.detail)
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's "There was an error parsing the body" hides why: not UTF-8, nested too deep, an
            # integer of thousands of digits. The cause says it in plain words.
            detail = f"the request body could not be parsed as JSON: {str(exc.__cause__)[:200]}"
        return respond(request, from_http_status(exc.status_code, detail, exc.headers))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error (request %s)", request_id_of(request.scope))
        return respond(request, GatewayError(ErrorKind.BACKEND, f"internal error: {type(exc).__name__}"))

    def overloaded() -> GatewayError | None:
        service: EmbeddingService | None = getattr(app.state, "service", None)
        return None if service is None else service.overloaded()

    # Added last = runs first: count everything, then authenticate, then refuse at once when every slot is
    # taken, then bound the body, then watch the connection while the handler runs.
    app.add_middleware(CancelOnDisconnectMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics)
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    # the protocol asks the same door before the app starts (connections.GuardedProtocol, __main__)
    app.state.admission = AdmissionDoor(overloaded, metrics, api_key)
    app.add_middleware(AdmissionMiddleware, door=app.state.admission, metrics=metrics)
    if api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
