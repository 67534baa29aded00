"""Embedding logic between the HTTP surface and Triton: validate, de-duplicate, chunk, fan out, reassemble.

Knows nothing about HTTP or tritonclient. The backend it drives is the small `Backend` interface, so
unit tests can exercise this logic with a stand-in while integration tests use the real Triton one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np

from bge_client.batching import Dedup, chunk_slices, gather_or_cancel
from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.inference import Backend, Deadline, ModelInfo
from bge_client.gateway.metrics import Metrics
from bge_client.gateway.protocol import EmbeddingRequest, Health, TextInputs
from bge_client.gateway.settings import CancelMode, GatewaySettings
from bge_client.gateway.token_ids import TokenRowRule
from bge_model_repository.contract import RowError, Truncate

log = logging.getLogger("bge-gateway")

T = TypeVar("T")


@dataclass
class RequestScope:
    """What follows one request into its chunk tasks: its deadline and the Triton calls it started."""

    deadline: Deadline
    calls: set[asyncio.Future[Any]] = field(default_factory=set)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done-callback of a shielded call whose request has gone: its outcome has nobody left to tell."""
    if not task.cancelled():
        task.exception()


SAFE_CANCELLATION_VERSION = (2, 53)
"""Triton 2.53 (release 24.12) fixed the SIGSEGV on a gRPC cancellation racing a request's completion
(triton-inference-server/server#7368); older servers crash about once in a few thousand cancellations."""


def cancellation_decision(mode: CancelMode, server_version: str) -> tuple[bool, str]:
    """Whether to cancel in-flight Triton calls of abandoned requests, and why, for the start-up log."""
    if mode is not CancelMode.AUTO:
        return mode is CancelMode.TRUE, f"cancel_triton_calls={mode.value}"
    parts = re.findall(r"\d+", server_version)[:2]
    if len(parts) < 2:
        return False, f"Triton reports no usable version ({server_version!r}); assuming an old one"
    if (int(parts[0]), int(parts[1])) >= SAFE_CANCELLATION_VERSION:
        return True, f"Triton {server_version} cancels safely"
    return False, (
        f"Triton {server_version} < 2.53 can crash on gRPC cancellations (server#7368); their calls finish instead"
    )


@dataclass(frozen=True)
class EmbeddingResult:
    """Vectors in input order and each input's real token count."""

    vectors: np.ndarray  # float32 [n, dim]
    num_tokens: np.ndarray  # int64 [n]

    @property
    def prompt_tokens(self) -> int:
        return int(self.num_tokens.sum())


def resolve_dimensions(requested: int | None, native: int, matryoshka: Sequence[int]) -> int:
    """Output size for a request: native, or a configured Matryoshka size; anything else is a 400."""
    if requested is None or requested == native:
        return native
    if requested in matryoshka and requested < native:
        return requested
    if matryoshka:
        allowed = ", ".join(str(d) for d in [*matryoshka, native] if d <= native)
        hint = f"this model can return {allowed} dimensions"
    else:
        hint = f"this model only returns its native {native} dimensions (it is not configured as Matryoshka)"
    raise GatewayError(ErrorKind.VALIDATION, f"dimensions={requested} is not supported: {hint}", param="dimensions")


def shorten(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Matryoshka: keep the first `dim` components and L2-normalize again."""
    if dim == vectors.shape[1]:
        return vectors
    cut = vectors[:, :dim]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return (cut / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)


class EmbeddingService:
    """Turns validated requests into Triton calls; holds the in-flight limit and the model facts."""

    def __init__(self, settings: GatewaySettings, backend: Backend, metrics: Metrics) -> None:
        self.settings = settings
        self.backend = backend
        self.metrics = metrics
        self.info: ModelInfo | None = None
        self.created = int(time.time())
        self._in_flight = 0
        self._leftovers: set[asyncio.Task[None]] = set()
        self.cancel_calls = settings.cancel_triton_calls is CancelMode.TRUE

    async def load_info(self) -> ModelInfo:
        """Model facts, read from Triton the first time the model is reachable."""
        if self.info is None:
            info = await self.backend.model_info()
            self.cancel_calls, why = cancellation_decision(self.settings.cancel_triton_calls, info.server_version)
            self.info = info
            log.info(
                "ready: Triton model %r at %s is ready (max batch %d, %d dimensions); serving %r",
                self.settings.model_name,
                self.backend.url,
                info.max_batch_size,
                info.dim,
                self.settings.public_model_name,
            )
            log.info(
                "abandoned requests %s their Triton calls in flight: %s",
                "cancel" if self.cancel_calls else "do not cancel",
                why,
            )
        return self.info

    async def wait_until_ready(self, poll_s: float = 0.5, max_poll_s: float = 5.0) -> ModelInfo:
        """Poll Triton until the model answers, saying once in plain words what is awaited."""
        waiting_said = False
        while True:
            try:
                return await self.load_info()
            except GatewayError as exc:
                if not waiting_said:
                    log.warning(
                        "waiting for Triton model %r at %s: %s", self.settings.model_name, self.backend.url, exc.message
                    )
                    waiting_said = True
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 2, max_poll_s)

    async def health(self) -> Health:
        """Healthy only when Triton reports the model ready (raises UNAVAILABLE with the reason)."""
        await self.backend.check_ready()
        info = await self.load_info()
        return Health(
            model=self.settings.public_model_name,
            triton_model=self.settings.model_name,
            max_batch_size=info.max_batch_size,
            dim=info.dim,
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Validate against the settings, then embed; 429 at once when too many requests are in flight."""
        if request.model != self.settings.public_model_name:
            raise GatewayError(
                ErrorKind.MODEL_NOT_FOUND,
                f"The model '{request.model}' does not exist; this server serves '{self.settings.public_model_name}'",
                param="model",
            )
        if self._in_flight >= self.settings.max_concurrent_requests:
            raise GatewayError(
                ErrorKind.OVERLOADED,
                f"the gateway already has {self._in_flight} requests in flight "
                f"(max_concurrent_requests={self.settings.max_concurrent_requests}); retry shortly",
            )
        self._in_flight += 1
        self.metrics.admitted.set(self._in_flight)
        scope = RequestScope(deadline=Deadline.after(self.settings.request_timeout_s))
        try:
            return await self._embed(request, scope)
        finally:
            self._release(scope)

    def _release(self, scope: RequestScope) -> None:
        """Free the request's slot, or, if Triton calls it left running are still out, once they end: so
        max_concurrent_requests x chunk_concurrency keeps bounding the calls in Triton."""
        running = [call for call in scope.calls if not call.done()]
        if not running:
            self._free_slot()
            return

        async def release_later() -> None:
            await asyncio.wait(running)
            self._free_slot()

        leftover = asyncio.ensure_future(release_later())
        self._leftovers.add(leftover)
        leftover.add_done_callback(self._leftovers.discard)

    def _free_slot(self) -> None:
        self._in_flight -= 1
        self.metrics.admitted.set(self._in_flight)

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: wait for Triton calls left running by abandoned requests (each ends by its deadline)."""
        if self._leftovers:
            await asyncio.wait(set(self._leftovers), timeout=timeout_s)

    async def _embed(self, request: EmbeddingRequest, scope: RequestScope) -> EmbeddingResult:
        inputs = request.inputs()
        count = len(inputs.texts) if isinstance(inputs, TextInputs) else len(inputs.ids)
        if count > self.settings.max_inputs:
            raise GatewayError(
                ErrorKind.VALIDATION,
                f"input has {count} items, more than the limit of {self.settings.max_inputs}",
                param="input",
            )
        info = await self.load_info()
        dim = resolve_dimensions(request.dimensions, info.dim, self.settings.matryoshka_dims)
        if isinstance(inputs, TextInputs):
            texts = inputs.texts
            if request.input_type == "query":
                instruction = self.settings.query_instruction
                texts = [(info.query_instruction if instruction is None else instruction) + t for t in texts]
            vectors, num_tokens = await self._embed_texts(texts, request.truncate, info.max_batch_size, scope)
        else:
            if request.input_type == "query":
                raise GatewayError(
                    ErrorKind.VALIDATION,
                    "input_type=query needs text input: the instruction cannot be added to "
                    "token ids; prepend its tokens yourself",
                    param="input_type",
                )
            rule = TokenRowRule.of(self.settings.public_model_name, info, self.settings.raw_token_ids)
            rows = rule.check(inputs.ids, request.truncate)
            vectors, num_tokens = await self._embed_token_ids(rows, info.encoder_max_batch_size, scope)
        self.metrics.texts.inc(count)
        self.metrics.tokens.inc(int(num_tokens.sum()))
        return EmbeddingResult(vectors=shorten(vectors, dim), num_tokens=num_tokens)

    async def _timed(self, call: Callable[[], Awaitable[T]], scope: RequestScope) -> T:
        """One Triton call, timed. Unless `cancel_calls` (`cancellation_decision`), it is shielded: a request
        that is cancelled (client gone, a sibling chunk failed) sends no further calls but lets this one finish
        at Triton."""
        start = time.perf_counter()
        task: asyncio.Future[T] = asyncio.ensure_future(call())
        task.add_done_callback(lambda _: self.metrics.triton_seconds.observe(time.perf_counter() - start))
        if self.cancel_calls:
            return await task
        scope.calls.add(task)
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _embed_texts(
        self, texts: list[str], truncate: Truncate, batch: int, scope: RequestScope
    ) -> tuple[np.ndarray, np.ndarray]:
        dedup = Dedup.of(texts)
        parts = await gather_or_cancel(
            [partial(self._text_chunk, dedup, s, truncate, scope) for s in chunk_slices(len(dedup.unique), batch)],
            self.settings.chunk_concurrency,
        )
        vectors = np.concatenate([p[0] for p in parts])
        num_tokens = np.concatenate([p[1] for p in parts]).astype(np.int64)
        return dedup.expand(vectors), dedup.expand(num_tokens)

    async def _text_chunk(
        self, dedup: Dedup[str], rows: slice, truncate: Truncate, scope: RequestScope
    ) -> tuple[np.ndarray, np.ndarray]:
        """One Triton request; a bad text is reported by its index in the caller's input."""
        try:
            return await self._timed(
                partial(self.backend.embed_texts, dedup.unique[rows], truncate, scope.deadline), scope
            )
        except GatewayError as exc:
            row = RowError.find(exc.message) if exc.kind is ErrorKind.VALIDATION else None
            if row is None:
                raise
            where = dedup.first_index(rows.start + row.row)
            raise GatewayError(exc.kind, f"input[{where}] {row.problem}", param="input") from None

    async def _embed_token_ids(
        self, rows: list[list[int]], batch: int, scope: RequestScope
    ) -> tuple[np.ndarray, np.ndarray]:
        dedup = Dedup.of([tuple(row) for row in rows])
        parts = await gather_or_cancel(
            [
                partial(self._timed, partial(self.backend.embed_token_ids, dedup.unique[s], scope.deadline), scope)
                for s in chunk_slices(len(dedup.unique), batch)
            ],
            self.settings.chunk_concurrency,
        )
        num_tokens = np.array([len(row) for row in rows], dtype=np.int64)
        return dedup.expand(np.concatenate(parts)), num_tokens
