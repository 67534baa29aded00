"""Triton over gRPC: the only module of the gateway that imports tritonclient.

One long-lived `tritonclient.grpc.aio` channel, a deadline on every call, and Triton's errors turned
into gateway error kinds here so nothing above this module sees a gRPC status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.utils import InferenceServerException

from bge_client.batching import pad_token_ids, text_array
from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.inference import Deadline, ModelInfo
from bge_client.model_config import read_model_facts
from bge_model_repository.contract import (
    EMBEDDING,
    INPUT_IDS,
    NUM_TOKENS,
    TEXT,
    TRUNCATE_PARAMETER,
    Truncate,
    encoder_model,
    is_queue_full,
    is_stub_dead,
    tokenizer_model,
)

CONTROL_TIMEOUT_S = 5.0
"""Deadline of readiness and config calls: short, so /health answers while Triton is stuck."""

MAX_RECONNECT_BACKOFF_MS = 500
"""gRPC waits up to 120 s between reconnects by default; a gateway started before Triton (compose,
Kubernetes), or waiting out a watchdog restart, should notice Triton within half a second of it coming up
(bge-large, a stub killed 6 times: the gateway healthy again 4.5-5.3 s after the kill with 500 ms, 4.7-7.0 s
with 2 s, whose backoff had grown past the restart)."""


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's own defaults (message size, keepalive) plus a short reconnect backoff."""
    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


def classify_triton_error(status: str, message: str) -> ErrorKind:
    """gRPC status (as tritonclient reports it, e.g. "StatusCode.UNAVAILABLE") + message -> kind."""
    code = status.removeprefix("StatusCode.")
    if code == "UNAVAILABLE" and is_queue_full(message):
        return ErrorKind.OVERLOADED
    if code == "INTERNAL" and is_stub_dead(message):  # an outage until the restart: a 503 like any other
        return ErrorKind.UNAVAILABLE
    if code == "RESOURCE_EXHAUSTED":
        return ErrorKind.OVERLOADED
    if code in {"UNAVAILABLE", "NOT_FOUND", "CANCELLED"}:
        return ErrorKind.UNAVAILABLE
    if code == "DEADLINE_EXCEEDED":
        return ErrorKind.TIMEOUT
    if code in {"INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION"}:
        return ErrorKind.VALIDATION
    return ErrorKind.BACKEND


class TritonBackend:
    """`Backend` for a Triton ensemble `model` and its `model-encoder`.

    Each inference call's gRPC deadline is the time its request has left (its `Deadline`), so Triton
    sees the gateway's request timeout and drops work whose caller has given up.
    """

    def __init__(self, url: str, model: str, timeout_s: float) -> None:
        self.url = url
        self.model = model
        self.encoder = encoder_model(model)
        self.tokenizer = tokenizer_model(model)
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url, channel_args=channel_args())

    def _error(self, exc: InferenceServerException, doing: str) -> GatewayError:
        status = str(exc.status() or "")
        message = str(exc.message() or exc)
        kind = classify_triton_error(status, message)
        if kind is ErrorKind.UNAVAILABLE:
            message = f"Triton at {self.url} is unavailable while {doing}: {message}"
        elif kind is ErrorKind.TIMEOUT:
            return self._timeout(doing)
        elif kind is ErrorKind.OVERLOADED:
            message = f"Triton's queue is full ({message}); retry shortly"
        elif kind is ErrorKind.BACKEND:
            message = f"Triton failed while {doing}: {status} {message}"
        # Triton only rejects what it was sent as invalid: that is always the request's input.
        return GatewayError(kind, message, param="input" if kind is ErrorKind.VALIDATION else None)

    def _timeout(self, doing: str) -> GatewayError:
        return GatewayError(ErrorKind.TIMEOUT, f"Triton did not answer within {self.timeout_s:g} s while {doing}")

    def _deadline_s(self, doing: str, deadline: Deadline) -> float:
        """gRPC deadline of an inference call: what its request has left."""
        left = deadline.left_s()
        if left <= 0:
            raise self._timeout(doing)
        return left

    async def check_ready(self) -> None:
        doing = f"checking that model '{self.model}' is ready"
        try:
            ready = await self._client.is_model_ready(self.model, client_timeout=CONTROL_TIMEOUT_S)
        except InferenceServerException as exc:
            error = self._error(exc, doing)
            if error.kind is ErrorKind.TIMEOUT:  # a server too stuck to say whether it is ready is not
                raise GatewayError(
                    ErrorKind.UNAVAILABLE,
                    f"Triton at {self.url} did not answer within {CONTROL_TIMEOUT_S:g} s while {doing}",
                ) from None
            raise error from None
        if not ready:
            raise GatewayError(ErrorKind.UNAVAILABLE, f"Triton at {self.url} reports model '{self.model}' is not ready")

    async def _config(self, model: str) -> dict[str, Any]:
        try:
            answer = await self._client.get_model_config(model, as_json=True, client_timeout=CONTROL_TIMEOUT_S)
        except InferenceServerException as exc:
            raise self._error(exc, f"reading the config of model '{model}'") from None
        return answer.get("config", answer)

    async def model_info(self) -> ModelInfo:
        await self.check_ready()
        try:
            ensemble = read_model_facts(await self._config(self.model))
            encoder = read_model_facts(await self._config(self.encoder))
        except (KeyError, ValueError) as exc:
            raise GatewayError(
                ErrorKind.UNAVAILABLE, f"Triton model '{self.model}' does not follow the contract: {exc}"
            ) from None
        parameters = ensemble.parameters
        return ModelInfo(
            max_batch_size=ensemble.max_batch_size,
            encoder_max_batch_size=encoder.max_batch_size,
            dim=ensemble.dim,
            max_length=parameters.max_length,
            query_instruction=parameters.query_instruction,
            server_version=await self._server_version(),
            vocab_size=parameters.vocab_size,
            cls_token_id=parameters.cls_token_id,
            sep_token_id=parameters.sep_token_id,
            precision=parameters.precision,
            pooling=parameters.pooling,
        )

    async def _server_version(self) -> str:
        try:
            metadata = await self._client.get_server_metadata(client_timeout=CONTROL_TIMEOUT_S)
        except InferenceServerException as exc:
            raise self._error(exc, "reading Triton's version") from None
        return str(metadata.version)

    async def _infer_texts(
        self,
        model: str,
        texts: Sequence[str],
        truncate: Truncate,
        outputs: Sequence[str],
        doing: str,
        deadline: Deadline,
    ) -> grpcclient.InferResult:
        """One text request (the ensemble's or the tokenizer's input) with the request's truncation."""
        data = text_array(texts)
        tensor = grpcclient.InferInput(TEXT, list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        try:
            return await self._client.infer(
                model,
                [tensor],
                outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
                parameters={TRUNCATE_PARAMETER: Truncate(truncate).value},
                client_timeout=self._deadline_s(doing, deadline),
            )
        except InferenceServerException as exc:
            raise self._error(exc, doing) from None

    async def embed_texts(
        self, texts: Sequence[str], truncate: Truncate, deadline: Deadline
    ) -> tuple[np.ndarray, np.ndarray]:
        doing = f"embedding {len(texts)} texts"
        result = await self._infer_texts(self.model, texts, truncate, (EMBEDDING, NUM_TOKENS), doing, deadline)
        return result.as_numpy(EMBEDDING), result.as_numpy(NUM_TOKENS).reshape(-1)

    async def tokenize(self, texts: Sequence[str], truncate: Truncate, deadline: Deadline) -> list[list[int]]:
        doing = f"tokenizing {len(texts)} texts"
        result = await self._infer_texts(self.tokenizer, texts, truncate, (INPUT_IDS, NUM_TOKENS), doing, deadline)
        ids, counts = result.as_numpy(INPUT_IDS), result.as_numpy(NUM_TOKENS).reshape(-1)
        return [row[:count].tolist() for row, count in zip(ids, counts, strict=True)]

    async def embed_token_ids(self, ids: Sequence[Sequence[int]], deadline: Deadline) -> np.ndarray:
        tensors = []
        for name, array in pad_token_ids(ids).items():
            tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        doing = f"embedding {len(ids)} token-id inputs"
        try:
            result = await self._client.infer(
                self.encoder,
                tensors,
                outputs=[grpcclient.InferRequestedOutput(EMBEDDING)],
                client_timeout=self._deadline_s(doing, deadline),
            )
        except InferenceServerException as exc:
            raise self._error(exc, doing) from None
        return result.as_numpy(EMBEDDING)

    async def close(self) -> None:
        await self._client.close()
