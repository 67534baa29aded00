"""Embedding logic between the HTTP surface and Triton: validate, de-duplicate, chunk, fan out, reassemble.

Knows nothing about HTTP or tritonclient. The backend it drives is the small `Backend` interface, so
unit tests can exercise this logic with a stand-in while integration tests use the real Triton one.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np

from bge_client.batching import Dedup, chunk_slices, gather_or_cancel
from bge_client.gateway.calls import RequestScope, TritonCalls
from bge_client.gateway.cancellation import cancellation_decision
from bge_client.gateway.dimensions import resolve_dimensions, shorten
from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.fair_share import FairShare, ids_cost, text_cost
from bge_client.gateway.inference import Backend, Deadline, ModelInfo
from bge_client.gateway.limits import check_count, check_sizes, shown
from bge_client.gateway.metrics import Metrics
from bge_client.gateway.protocol import EmbeddingRequest, Health, TextInputs, Version
from bge_client.gateway.settings import GatewaySettings
from bge_client.gateway.tei_protocol import EmbeddingModel, Info, ModelType, dtype_name
from bge_client.gateway.token_ids import TokenRowRule
from bge_model_repository.contract import RowError, Truncate

log = logging.getLogger("bge-gateway")

MAX_UNKNOWN_FIELDS_REMEMBERED = 1000
"""Unknown field names logged (once each) before the gateway stops saying: fuzzers send endless new ones."""

try:
    VERSION = importlib.metadata.version("bge-triton")
except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
    VERSION = "0+unknown"

T = TypeVar("T")


def for_caller(error: GatewayError, where: Callable[[int], str], param: str) -> GatewayError:
    """A Triton row error (`RowError`) restated about the caller's own field (`input[i]`, `prompt`); any
    other error as it is."""
    row = RowError.find(error.message) if error.kind is ErrorKind.VALIDATION else None
    if row is None:
        return error
    return GatewayError(error.kind, f"{where(row.row)} {row.problem}", param=param)


@dataclass(frozen=True)
class EmbeddingResult:
    """Vectors in input order and each input's real token count."""

    vectors: np.ndarray  # float32 [n, dim]
    num_tokens: np.ndarray  # int64 [n]
    inference_s: float = 0.0  # wall time of the request's Triton calls, first sent to last answered
    characters: int = 0  # of the text inputs (0 for token ids)

    @property
    def prompt_tokens(self) -> int:
        return int(self.num_tokens.sum())


class EmbeddingService:
    """Turns validated requests into Triton calls; holds the in-flight limit and the model facts."""

    def __init__(self, settings: GatewaySettings, backend: Backend, metrics: Metrics) -> None:
        self.settings = settings
        self.backend = backend
        self.metrics = metrics
        self.info: ModelInfo | None = None
        self.created = int(time.time())
        self._in_flight = 0
        self._unknown_fields_seen: set[str] = set()
        self.calls = TritonCalls(metrics, settings.request_timeout_s)

    async def load_info(self) -> ModelInfo:
        """Model facts, read from Triton the first time the model is reachable."""
        if self.info is None:
            info = await self.backend.model_info()
            cancel, why = cancellation_decision(self.settings.cancel_triton_calls, info.server_version)
            capacity = self.settings.max_inflight_tokens or 2 * info.max_batch_size * info.max_length
            self.calls.configure(FairShare(capacity), cancel)
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
                "cancel" if cancel else "do not cancel",
                why,
            )
            log.info(
                "at most %d tokens of calls in Triton at once (%s); other chunks wait in the gateway, "
                "fewest-tokens-in-flight request first, and leave the queue when their client goes",
                capacity,
                "max_inflight_tokens"
                if self.settings.max_inflight_tokens
                else f"two batches of {info.max_batch_size} x {info.max_length} tokens",
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
        self.calls.check_backlog(self.settings.backlog_unready_s or self.settings.request_timeout_s / 2)
        return Health(
            model=self.settings.public_model_name,
            triton_model=self.settings.model_name,
            max_batch_size=info.max_batch_size,
            dim=info.dim,
        )

    def check_model(self, model: str | None) -> None:
        """404 unless `model` (when given) is the served one."""
        if model is not None and model != self.settings.public_model_name:
            raise GatewayError(
                ErrorKind.MODEL_NOT_FOUND,
                f"The model '{shown(model)}' does not exist; this server serves '{self.settings.public_model_name}'",
                param="model",
            )

    def note_unknown_fields(self, fields: list[str]) -> None:
        """Log each unknown request field once (they are also named back in a response header)."""
        new = [name for name in fields if name not in self._unknown_fields_seen]
        if new and len(self._unknown_fields_seen) < MAX_UNKNOWN_FIELDS_REMEMBERED:
            self._unknown_fields_seen.update(new)
            log.warning(
                "requests carry fields this API does not have, ignored: %s (said once per field; each "
                "answer names them in the X-Ignored-Fields header)",
                ", ".join(repr(name[:64]) for name in new[:10]),
            )

    async def tei_info(self) -> Info:
        """TEI's /info from the served model's config and these settings."""
        info = await self.load_info()
        return Info(
            model_id=self.settings.public_model_name,
            model_dtype=dtype_name(info.precision),
            model_type=ModelType(embedding=EmbeddingModel(pooling=info.pooling or "unknown")),
            max_concurrent_requests=self.settings.max_concurrent_requests,
            max_input_length=info.max_length,
            max_batch_requests=info.max_batch_size,
            max_client_batch_size=self.settings.max_inputs,
            version=VERSION,
        )

    async def version(self) -> Version:
        try:
            triton = (await self.load_info()).server_version or None
        except GatewayError:
            triton = None  # /version answers while Triton is down
        return Version(version=VERSION, triton_version=triton)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Validate against the settings, then embed; 429 at once when too many requests are in flight."""
        self.check_model(request.model)
        self.note_unknown_fields(request.unknown_fields())
        return await self._admitted(partial(self._embed, request))

    async def embed_texts(self, texts: list[str], truncate: Truncate, dimensions: int | None) -> EmbeddingResult:
        """Texts embedded as they are (TEI's /embed), under the same limits as /v1/embeddings."""
        return await self._admitted(partial(self._embed_plain_texts, texts, truncate, dimensions))

    async def tokenize(self, text: str, truncate: Truncate) -> list[int]:
        """The token ids the encoder would see for `text` (the model's tokenizer, in Triton)."""

        check_sizes(self.settings, [text])

        async def run(scope: RequestScope) -> list[int]:
            info = await self.load_info()
            try:
                (ids,) = await self._timed(
                    partial(self.backend.tokenize, [text], truncate, scope.deadline),
                    scope,
                    text_cost([text], info.max_length),
                )
            except GatewayError as exc:
                raise for_caller(exc, lambda _row: "prompt", "prompt") from None
            return ids

        return await self._admitted(run)

    def overloaded(self) -> GatewayError | None:
        """The 429 to answer when every one of max_concurrent_requests slots is taken, else None."""
        if self._in_flight < self.settings.max_concurrent_requests:
            return None
        return GatewayError(
            ErrorKind.OVERLOADED,
            f"the gateway already has {self._in_flight} requests in flight "
            f"(max_concurrent_requests={self.settings.max_concurrent_requests}); retry shortly",
        )

    async def _admitted(self, work: Callable[[RequestScope], Awaitable[T]]) -> T:
        """Run `work` holding one of max_concurrent_requests slots, or 429 at once."""
        if (error := self.overloaded()) is not None:
            raise error
        self._in_flight += 1
        self.metrics.admitted.set(self._in_flight)
        scope = RequestScope(deadline=Deadline.after(self.settings.request_timeout_s))
        try:
            return await work(scope)
        finally:
            self.calls.when_done(scope, self._free_slot)

    def _free_slot(self) -> None:
        self._in_flight -= 1
        self.metrics.admitted.set(self._in_flight)

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: wait for Triton calls left running by abandoned requests (each ends by its deadline)."""
        await self.calls.drain(timeout_s)

    async def _embed(self, request: EmbeddingRequest, scope: RequestScope) -> EmbeddingResult:
        inputs = request.inputs()
        if isinstance(inputs, TextInputs):
            texts = inputs.texts
            if request.input_type == "query":
                info = await self.load_info()
                instruction = self.settings.query_instruction
                texts = [(info.query_instruction if instruction is None else instruction) + t for t in texts]
            return await self._embed_plain_texts(texts, request.truncate, request.dimensions, scope)
        check_count(self.settings, len(inputs.ids))
        info = await self.load_info()
        dim = resolve_dimensions(request.dimensions, info.dim, self.settings.matryoshka_dims)
        if request.input_type == "query":
            raise GatewayError(
                ErrorKind.VALIDATION,
                "input_type=query needs text input: the instruction cannot be added to "
                "token ids; prepend its tokens yourself",
                param="input_type",
            )
        rule = TokenRowRule.of(self.settings.public_model_name, info, self.settings.raw_token_ids)
        rows = rule.check(inputs.ids, request.truncate)
        start = time.perf_counter()
        vectors, num_tokens = await self._embed_token_ids(rows, info.encoder_max_batch_size, scope)
        return self._result(vectors, num_tokens, dim, time.perf_counter() - start, 0)

    async def _embed_plain_texts(
        self, texts: list[str], truncate: Truncate, dimensions: int | None, scope: RequestScope
    ) -> EmbeddingResult:
        check_count(self.settings, len(texts))
        check_sizes(self.settings, texts)
        info = await self.load_info()
        dim = resolve_dimensions(dimensions, info.dim, self.settings.matryoshka_dims)
        start = time.perf_counter()
        vectors, num_tokens = await self._embed_texts(texts, truncate, info.max_batch_size, scope)
        return self._result(vectors, num_tokens, dim, time.perf_counter() - start, sum(map(len, texts)))

    def _result(
        self, vectors: np.ndarray, num_tokens: np.ndarray, dim: int, inference_s: float, characters: int
    ) -> EmbeddingResult:
        self.metrics.texts.inc(len(num_tokens))
        self.metrics.tokens.inc(int(num_tokens.sum()))
        self.metrics.tokens_per_request.observe(int(num_tokens.sum()))
        return EmbeddingResult(shorten(vectors, dim), num_tokens, inference_s, characters)

    async def _timed(self, call: Callable[[], Awaitable[T]], scope: RequestScope, cost: int) -> T:
        await self.load_info()  # sizes the fair share
        return await self.calls.send(call, scope, cost)

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
        texts = dedup.unique[rows]
        info = await self.load_info()
        try:
            return await self._timed(
                partial(self.backend.embed_texts, texts, truncate, scope.deadline),
                scope,
                text_cost(texts, info.max_length),
            )
        except GatewayError as exc:

            def where(row: int) -> str:
                return f"input[{dedup.first_index(rows.start + row)}]"

            raise for_caller(exc, where, "input") from None

    async def _embed_token_ids(
        self, rows: list[list[int]], batch: int, scope: RequestScope
    ) -> tuple[np.ndarray, np.ndarray]:
        dedup = Dedup.of([tuple(row) for row in rows])
        parts = await gather_or_cancel(
            [
                partial(
                    self._timed,
                    partial(self.backend.embed_token_ids, dedup.unique[s], scope.deadline),
                    scope,
                    ids_cost(dedup.unique[s]),
                )
                for s in chunk_slices(len(dedup.unique), batch)
            ],
            self.settings.chunk_concurrency,
        )
        num_tokens = np.array([len(row) for row in rows], dtype=np.int64)
        return dedup.expand(np.concatenate(parts)), num_tokens
