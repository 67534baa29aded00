"""Closed-loop load: C workers, each sending its next request as soon as the last one answered.

Two drivers send the same `Request`s: `GatewayDriver` (OpenAI `POST /v1/embeddings` over HTTP with
aiohttp) and `TritonDriver` (the ensemble over gRPC with `tritonclient.grpc.aio`). Every run is bounded
both in requests and in seconds, and by default only loopback addresses are accepted as targets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import orjson

from bge_deploy.bench.measure import RunRecord
from bge_deploy.bench.workload import Request
from bge_model_repository.contract import NUM_TOKENS, TEXT

REQUEST_TIMEOUT_S = 600.0
"""Deadline of one request: a stuck server ends up as errors, never as a hung benchmark. Generous, since
32 closed-loop clients of bge-large on 2 CPU cores wait about a minute each (and the gateway must be
started with BGE_GATEWAY_REQUEST_TIMEOUT_S above that too)."""

HARD_MAX_REQUESTS = 1_000_000
HARD_MAX_SECONDS = 3600.0


class DriverError(RuntimeError):
    """A request that did not give embeddings; the message says what came back."""


class Driver(Protocol):
    """Sends one request of texts; returns the tokens the server says it counted (None: not reported)."""

    target: str

    async def embed(self, texts: Sequence[str]) -> int | None: ...

    async def close(self) -> None: ...


def host_of(url: str) -> str:
    """Host of `http://host:port/...` or of a bare `host:port` (gRPC style)."""
    parsed = urlsplit(url if "://" in url else f"//{url}")
    if not parsed.hostname:
        raise ValueError(f"no host in '{url}'")
    return parsed.hostname


def port_of(url: str) -> int:
    """Port of `http://host:port/...` or of a bare `host:port`, the scheme's default where none is given."""
    parsed = urlsplit(url if "://" in url else f"//{url}")
    if parsed.port is not None:
        return parsed.port
    return 443 if parsed.scheme == "https" else 80


def is_loopback(host: str) -> bool:
    """True when every address the host resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_targets(urls: Sequence[str], allow_remote: bool) -> None:
    """Refuse non-loopback targets unless the operator said so (load is not to be aimed by accident)."""
    if allow_remote:
        return
    remote = [u for u in urls if not is_loopback(host_of(u))]
    if remote:
        raise ValueError(
            f"{', '.join(remote)} is not a loopback address; pass --allow-remote to load a remote server "
            "(or port-forward it to 127.0.0.1)"
        )


class GatewayDriver:
    """OpenAI embeddings over HTTP: keep-alive connections, one per worker, as an SDK pool would.

    The project's gateway (`/v1/embeddings` under its URL) or any OpenAI-compatible peer: `base_url` is
    then what the openai SDK takes (infinity: http://host:7997, sglang or TEI: http://host:port/v1).

    aiohttp, not httpx: on a 2-core box the load generator shares the CPU with the server, and
    httpx spent 54% of a core at 150 requests/s where aiohttp spends about a third of that
    (BENCHMARKS.md, bge-small profile); the lighter client leaves the server its CPU.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        concurrency: int,
        encoding_format: str = "base64",
        api_key: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        target: str = "gateway",
        path: str = "/v1/embeddings",
    ) -> None:
        self.target = target
        self.url = base_url.rstrip("/") + path
        self.model = model
        self.encoding_format = encoding_format
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop, as aiohttp requires.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=self.headers,
            )
        return self._session

    async def embed(self, texts: Sequence[str]) -> int | None:
        body = orjson.dumps({"model": self.model, "input": list(texts), "encoding_format": self.encoding_format})
        async with self._client().post(self.url, data=body) as response:
            raw = await response.read()
            if response.status != 200:
                raise DriverError(f"HTTP {response.status}: {raw[:300].decode(errors='replace')}")
        payload = orjson.loads(raw)
        if len(payload.get("data", ())) != len(texts):
            raise DriverError(f"asked for {len(texts)} embeddings, got {len(payload.get('data', ()))}")
        usage = payload.get("usage") or {}
        return usage.get("prompt_tokens")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class TritonDriver:
    """The ensemble over gRPC: texts as a BYTES [n, 1] tensor, `embedding` and `num_tokens` back."""

    target = "triton"

    def __init__(self, url: str, model: str, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        import tritonclient.grpc as grpc_types
        import tritonclient.grpc.aio as grpc_aio

        self._types = grpc_types
        self.client = grpc_aio.InferenceServerClient(url)
        self.model = model
        self.timeout_s = timeout_s

    async def embed(self, texts: Sequence[str]) -> int | None:
        from tritonclient.utils import InferenceServerException

        data = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
        tensor = self._types.InferInput(TEXT, list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        try:
            result = await self.client.infer(self.model, [tensor], client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise DriverError(f"{exc.status()}: {exc.message()}") from None
        counts = result.as_numpy(NUM_TOKENS)
        if counts is None or counts.shape[0] != len(texts):
            raise DriverError(f"asked for {len(texts)} embeddings, got {None if counts is None else counts.shape}")
        return int(counts.sum())

    async def close(self) -> None:
        await self.client.close()


async def run_load(
    driver: Driver,
    requests: Sequence[Request],
    concurrency: int,
    max_requests: int | None,
    max_seconds: float | None,
    on_done: Callable[[], None] | None = None,
) -> RunRecord:
    """C workers loop over `requests` (round robin) until `max_requests` were sent or `max_seconds` passed.

    Both bounds are clamped to hard limits, so no combination of flags runs forever.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if not requests:
        raise ValueError("no requests to send")
    limit = min(max_requests or HARD_MAX_REQUESTS, HARD_MAX_REQUESTS)
    seconds = min(max_seconds or HARD_MAX_SECONDS, HARD_MAX_SECONDS)
    record = RunRecord()
    issued = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal issued
        while issued < limit and time.perf_counter() < deadline:
            request = requests[issued % len(requests)]
            issued += 1
            sent = time.perf_counter()
            try:
                reported = await driver.embed(request.texts)
            except Exception as exc:  # every failure is counted; the run goes on
                record.add_error(f"{type(exc).__name__}: {exc}")
            else:
                record.add_success(time.perf_counter() - sent, len(request.texts), request.tokens, reported)
            if on_done is not None:
                on_done()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    record.elapsed_s = time.perf_counter() - start
    return record


async def warm_up(driver: Driver, requests: Sequence[Request], count: int, concurrency: int) -> RunRecord:
    """A few unrecorded requests first: connections open, the server's first-call costs paid."""
    if count <= 0:
        return RunRecord()
    return await run_load(driver, requests, min(concurrency, count), count, 60.0)
