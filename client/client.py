"""Thin Python client for the Triton embedding ensemble, over gRPC or HTTP, blocking or asyncio.

It does what every caller would otherwise repeat: split big batches to the model's `max_batch_size`,
retry with backoff when Triton is overloaded or briefly unreachable, put a deadline on each call, and
hand back the token counts Triton measured.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import ModuleType, TracebackType
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np
from tritonclient.utils import InferenceServerException

from bge_client.batching import chunk_slices, gather_or_cancel, text_array
from bge_client.model_config import ModelFacts, read_model_facts
from bge_model_repository.contract import (
    DEFAULT_GRPC_URL,
    DEFAULT_HTTP_URL,
    DEFAULT_MODEL,
    DEFAULT_TRUNCATE,
    EMBEDDING,
    NUM_TOKENS,
    TEXT,
    TRUNCATE_PARAMETER,
    Truncate,
    is_queue_full,
    is_stub_dead,
)

Transport = Literal["grpc", "http"]
T = TypeVar("T")

RETRYABLE_GRPC = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})
RETRYABLE_HTTP = frozenset({"429", "502", "503"})


class Embeddings(NamedTuple):
    """Vectors (float32 [n, dim], L2-normalized) and each text's token count (int64 [n])."""

    vectors: np.ndarray
    num_tokens: np.ndarray


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: overload clears in a batch time, restarts in seconds. The default waits
    add up to 11.1 s (5.5-11.1 s jittered), past a watchdog restart of tritonserver (bge-large: 4.3-4.8 s,
    RELIABILITY.md "Recovery"), so a call made while the server restarts returns its vectors, late."""

    attempts: int = 10
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def delays(self) -> list[float]:
        """Nominal wait before each retry (attempts - 1 of them); jitter is applied when sleeping."""
        return [
            min(self.initial_backoff_s * self.multiplier**k, self.max_backoff_s)
            for k in range(max(self.attempts - 1, 0))
        ]


def is_retryable(exc: BaseException) -> bool:
    """Overload (queue full, 429), an unreachable server or a dead stub (until the restart): worth another try.
    Deadlines and bad input: not."""
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "").removeprefix("StatusCode.")
        message = str(exc.message() or "")
        return status in RETRYABLE_GRPC or status in RETRYABLE_HTTP or is_queue_full(message) or is_stub_dead(message)
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError)


def _jittered(delay: float) -> float:
    return delay * random.uniform(0.5, 1.0)


_MODULES = {
    ("grpc", False): "tritonclient.grpc",
    ("grpc", True): "tritonclient.grpc.aio",
    ("http", False): "tritonclient.http",
    ("http", True): "tritonclient.http.aio",
}


def _load_api(transport: Transport, asynchronous: bool) -> ModuleType:
    """The tritonclient module for a transport; imported lazily so either extra is enough."""
    if transport not in ("grpc", "http"):
        raise ValueError(f"protocol must be 'grpc' or 'http', got {transport!r}")
    return importlib.import_module(_MODULES[(transport, asynchronous)])


class _Base:
    """What the blocking and asyncio clients share: request building and result parsing."""

    def __init__(
        self,
        url: str | None,
        protocol: Transport,
        model: str,
        *,
        timeout_s: float,
        retry: RetryPolicy,
        truncate: Truncate,
        max_batch_size: int | None,
        asynchronous: bool,
    ) -> None:
        self.protocol: Transport = protocol
        self.url = url or (DEFAULT_GRPC_URL if protocol == "grpc" else DEFAULT_HTTP_URL)
        self.model = model
        self.timeout_s = timeout_s
        self.retry = retry
        self.truncate = Truncate(truncate)
        self._api = _load_api(protocol, asynchronous)
        self._batch_override = max_batch_size
        self._facts: ModelFacts | None = None
        # gRPC takes a deadline per call; HTTP clients take it when constructed.
        self._call_kwargs: dict[str, Any] = {"client_timeout": timeout_s} if protocol == "grpc" else {}
        self._config_kwargs: dict[str, Any] = {"as_json": True, **self._call_kwargs} if protocol == "grpc" else {}

    def _request(self, texts: Sequence[str], truncate: Truncate | None) -> dict[str, Any]:
        data = text_array(texts)
        tensor = self._api.InferInput(TEXT, list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        return {
            "model_name": self.model,
            "inputs": [tensor],
            "outputs": [self._api.InferRequestedOutput(EMBEDDING), self._api.InferRequestedOutput(NUM_TOKENS)],
            "parameters": {TRUNCATE_PARAMETER: Truncate(truncate or self.truncate).value},
            **self._call_kwargs,
        }

    @staticmethod
    def _parse(result: Any) -> Embeddings:
        return Embeddings(
            result.as_numpy(EMBEDDING).astype(np.float32, copy=False),
            result.as_numpy(NUM_TOKENS).reshape(-1).astype(np.int64),
        )

    def _batch(self, facts: ModelFacts) -> int:
        return self._batch_override or facts.max_batch_size

    @staticmethod
    def _join(parts: list[Embeddings], dim: int) -> Embeddings:
        if not parts:
            return Embeddings(np.empty((0, dim), dtype=np.float32), np.empty(0, dtype=np.int64))
        return Embeddings(np.concatenate([p.vectors for p in parts]), np.concatenate([p.num_tokens for p in parts]))


def _as_list(texts: str | Sequence[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


class EmbeddingClient(_Base):
    """Blocking client: `EmbeddingClient("localhost:8001").embed(["你好"])` -> float32 (1, 1024)."""

    def __init__(
        self,
        url: str | None = None,
        protocol: Transport = "grpc",
        model: str = DEFAULT_MODEL,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        truncate: Truncate = DEFAULT_TRUNCATE,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__(
            url,
            protocol,
            model,
            timeout_s=timeout_s,
            retry=retry or RetryPolicy(),
            truncate=truncate,
            max_batch_size=max_batch_size,
            asynchronous=False,
        )
        if protocol == "grpc":
            self._client = self._api.InferenceServerClient(self.url)
        else:
            self._client = self._api.InferenceServerClient(
                self.url, connection_timeout=timeout_s, network_timeout=timeout_s
            )

    def _retrying(self, call: Callable[[], T]) -> T:
        for delay in [*self.retry.delays(), None]:
            try:
                return call()
            except Exception as exc:
                if delay is None or not is_retryable(exc):
                    raise
                time.sleep(_jittered(delay))
        raise AssertionError("unreachable")  # pragma: no cover

    def model_facts(self) -> ModelFacts:
        """Max batch and dimension from the ensemble's config, read once."""
        if self._facts is None:
            self._facts = read_model_facts(
                self._retrying(lambda: self._client.get_model_config(self.model, **self._config_kwargs))
            )
        return self._facts

    @property
    def max_batch_size(self) -> int:
        return self._batch(self.model_facts())

    @property
    def dim(self) -> int:
        return self.model_facts().dim

    def embed_with_tokens(self, texts: str | Sequence[str], truncate: Truncate | None = None) -> Embeddings:
        """Vectors and token counts, in input order; batches above max_batch_size are split."""
        items = _as_list(texts)
        facts = self.model_facts()
        parts = [
            self._retrying(lambda s=s: self._parse(self._client.infer(**self._request(items[s], truncate))))
            for s in chunk_slices(len(items), self._batch(facts))
        ]
        return self._join(parts, facts.dim)

    def embed(self, texts: str | Sequence[str], truncate: Truncate | None = None) -> np.ndarray:
        """float32 (n, dim) L2-normalized vectors, in input order."""
        return self.embed_with_tokens(texts, truncate).vectors

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncEmbeddingClient(_Base):
    """asyncio twin of `EmbeddingClient`; chunks of one call run concurrently (up to `max_concurrency`)."""

    def __init__(
        self,
        url: str | None = None,
        protocol: Transport = "grpc",
        model: str = DEFAULT_MODEL,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        truncate: Truncate = DEFAULT_TRUNCATE,
        max_batch_size: int | None = None,
        max_concurrency: int = 8,
    ) -> None:
        super().__init__(
            url,
            protocol,
            model,
            timeout_s=timeout_s,
            retry=retry or RetryPolicy(),
            truncate=truncate,
            max_batch_size=max_batch_size,
            asynchronous=True,
        )
        self.max_concurrency = max_concurrency
        self._client: Any = None

    def _connection(self) -> Any:
        # Created on first use, inside the running loop that will own the channel/session.
        if self._client is None:
            if self.protocol == "grpc":
                self._client = self._api.InferenceServerClient(self.url)
            else:
                self._client = self._api.InferenceServerClient(self.url, conn_timeout=self.timeout_s)
        return self._client

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        for delay in [*self.retry.delays(), None]:
            try:
                return await call()
            except Exception as exc:
                if delay is None or not is_retryable(exc):
                    raise
                await asyncio.sleep(_jittered(delay))
        raise AssertionError("unreachable")  # pragma: no cover

    async def model_facts(self) -> ModelFacts:
        if self._facts is None:
            client = self._connection()
            self._facts = read_model_facts(
                await self._retrying(lambda: client.get_model_config(self.model, **self._config_kwargs))
            )
        return self._facts

    async def embed_with_tokens(self, texts: str | Sequence[str], truncate: Truncate | None = None) -> Embeddings:
        items = _as_list(texts)
        facts = await self.model_facts()
        client = self._connection()

        async def one(rows: slice) -> Embeddings:
            result = await self._retrying(lambda: client.infer(**self._request(items[rows], truncate)))
            return self._parse(result)

        parts = await gather_or_cancel(
            [partial(one, s) for s in chunk_slices(len(items), self._batch(facts))], self.max_concurrency
        )
        return self._join(parts, facts.dim)

    async def embed(self, texts: str | Sequence[str], truncate: Truncate | None = None) -> np.ndarray:
        return (await self.embed_with_tokens(texts, truncate)).vectors

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> AsyncEmbeddingClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
