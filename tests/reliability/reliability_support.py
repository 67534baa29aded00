"""Helpers of the reliability tests: process memory, Prometheus scrapes, a launched `bge-triton`, load loops.

Everything here talks to real processes on 127.0.0.1; every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from gateway.gateway_process import SERVED_NAME, Gateway
from prometheus_client.parser import text_string_to_metric_families

from bge_client.batching import text_array
from bge_deploy.serving import launched
from bge_deploy.serving.process import children
from bge_deploy.serving.stubs import StubProcess

MIB = 1024 * 1024
ADMIN_KEY = "reliability-admin-key"

GatewayFactory = Callable[..., Gateway]
"""The `start_gateway_for` fixture: `(triton_url=None, healthy=True, **BGE_GATEWAY_settings) -> Gateway`."""


# -- processes ---------------------------------------------------------------------------------------------


# -- metrics -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One Prometheus scrape; `value` sums the samples of a name whose labels include the given ones.

    The parser names counter samples `<name>_total` even where Triton writes `<name>`: either is accepted.
    """

    samples: list[tuple[str, dict[str, str], float]]

    @classmethod
    def of(cls, url: str, headers: dict[str, str] | None = None) -> Scrape:
        text = httpx.get(url, headers=headers, timeout=10).text
        return cls(
            [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]
        )

    def value(self, name: str, **labels: str) -> float:
        name = name.removesuffix("_total")
        return sum(
            v
            for n, have, v in self.samples
            if n.removesuffix("_total") == name and all(have.get(k) == want for k, want in labels.items())
        )


def triton_requests(scrape: Scrape, model: str) -> float:
    """Requests a Triton model has finished (succeeded or failed, cancellations included)."""
    return scrape.value("nv_inference_request_success", model=model) + scrape.value(
        "nv_inference_request_failure", model=model
    )


def wait_until(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> float:
    """Poll until `condition()` holds; the seconds it took. Fails the test after `timeout_s`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(poll_s)
    return time.monotonic() - start


def pending_settles(metrics_url: str, model: str, timeout_s: float = 30.0) -> float:
    """Seconds until none of `model`'s Triton models (ensemble, tokenizer, encoder) has a pending request."""

    def idle() -> bool:
        scrape = Scrape.of(metrics_url)
        return all(
            scrape.value("nv_inference_pending_request_count", model=m) == 0
            for m in (model, f"{model}-tokenizer", f"{model}-encoder")
        )

    return wait_until(idle, timeout_s, poll_s=0.1)


# -- reference vectors and request bodies ------------------------------------------------------------------


def reference_vectors(grpc_url: str, model: str, texts: Sequence[str], batch: int) -> dict[str, np.ndarray]:
    """Each distinct text's vector, straight from Triton (one caller, no gateway): the expected answer."""
    unique = list(dict.fromkeys(texts))
    vectors: dict[str, np.ndarray] = {}
    with grpcclient.InferenceServerClient(grpc_url) as client:
        for start in range(0, len(unique), batch):
            part = unique[start : start + batch]
            data = text_array(part)
            tensor = grpcclient.InferInput("text", list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            result = client.infer(model, [tensor], client_timeout=60)
            vectors.update(zip(part, result.as_numpy("embedding"), strict=True))
    return vectors


def body(texts: Sequence[str], **fields: object) -> dict[str, object]:
    return {"model": SERVED_NAME, "input": list(texts), **fields}


def assert_vectors(response: httpx.Response, texts: Sequence[str], expected: dict[str, np.ndarray]) -> None:
    """A 200 whose vectors are, in input order, the ones Triton computes for these texts."""
    assert response.status_code == 200, response.text[:300]
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(texts)))
    assert_same_vectors([d["embedding"] for d in data], texts, expected)


def assert_same_vectors(got: object, texts: Sequence[str], expected: dict[str, np.ndarray]) -> None:
    """`got` (rows in input order, from any client) are the vectors Triton computes for these texts."""
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), np.stack([expected[t] for t in texts]), atol=1e-4)


# -- load ----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One request of a load loop, as its client saw it."""

    start: float
    end: float
    texts: list[str]
    status: int | None = None
    error: str | None = None  # transport error class name when there was no response
    response: httpx.Response | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


async def steady_load(
    url: str,
    make_texts: Callable[[int, int], list[str]],
    workers: int,
    duration_s: float,
    max_per_worker: int,
    fresh_connections: bool = False,
    timeout_s: float = 20.0,
) -> list[Outcome]:
    """`workers` clients posting back to back for `duration_s` (at most `max_per_worker` requests each).

    `fresh_connections`: a new TCP connection per request, so a refused connection is told apart from a
    request the server dropped.
    """
    outcomes: list[Outcome] = []
    stop_at = time.monotonic() + duration_s
    limits = httpx.Limits(max_keepalive_connections=0 if fresh_connections else workers)

    async def worker(w: int, client: httpx.AsyncClient) -> None:
        for i in range(max_per_worker):
            if time.monotonic() >= stop_at:
                return
            texts = make_texts(w, i)
            outcome = Outcome(time.monotonic(), 0.0, texts)
            try:
                outcome.response = await client.post(f"{url}/v1/embeddings", json=body(texts))
                outcome.status = outcome.response.status_code
            except httpx.TransportError as exc:
                outcome.error = type(exc).__name__
                await asyncio.sleep(0.02)  # a refused connection returns at once: do not spin
            outcome.end = time.monotonic()
            outcomes.append(outcome)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        await asyncio.gather(*[worker(w, client) for w in range(workers)])
    return outcomes


def repository_of(source: Path, model: str, into: Path) -> Path:
    """A model repository holding only `model` (its ensemble, tokenizer and encoder) copied from `source`, for
    Tritons launched by the tests themselves."""
    for name in (model, f"{model}-tokenizer", f"{model}-encoder"):
        shutil.copytree(source / name, into / name, symlinks=True)
    return into


# -- a launched bge-triton (the CLI, with its watchdog) ----------------------------------------------------------


class LaunchedTriton(launched.LaunchedTriton):
    """`bge-triton` run as a process of its own (the deploy helper), with the tests' questions about it."""

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.popen is not None
        return self.popen

    def text(self) -> str:
        return self.log()

    def line_time(self, needle: str, after: float = 0.0) -> float | None:
        """When a line containing `needle` was printed (monotonic), the first one after `after`."""
        return next((t for t, line in list(self.lines) if needle in line and t >= after), None)

    def wait_for_line(self, needle: str, timeout_s: float, after: float = 0.0) -> float:
        wait_until(
            lambda: self.line_time(needle, after) is not None or self.process.poll() is not None, timeout_s, poll_s=0.05
        )
        found = self.line_time(needle, after)
        assert found is not None, f"bge-triton never said {needle!r}:\n{self.text()}"
        return found

    def tritonserver_pid(self) -> int:
        (pid,) = children(self.process.pid)
        return pid

    def stubs(self) -> list[StubProcess]:
        return StubProcess.children_of(self.tritonserver_pid())

    def stub_of(self, model: str) -> StubProcess:
        """A Python-backend stub of `model` (the first, where it runs several instances)."""
        stubs = self.stubs()
        mine = [stub for stub in stubs if stub.model == model]
        assert mine, f"no stub of {model!r} among {stubs}"
        return mine[0]

    def model_ready(self, model: str) -> bool:
        try:
            return httpx.get(f"{self.http_url}/v2/models/{model}/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, timeout_s: float = 30.0) -> int:
        code = super().stop(timeout_s)
        assert code is not None
        return code


def launch_triton(repository: Path, *flags: str, timeout_s: float = 120.0) -> LaunchedTriton:
    """Start `bge-triton` on free loopback ports with a known admin key; return once it says it is ready."""
    triton = LaunchedTriton(repository, *flags, env={**os.environ, "BGE_TRITON_ADMIN_KEY": ADMIN_KEY}).start()
    try:
        triton.wait_for_line(launched.READY_LINE, timeout_s)
    except AssertionError:
        triton.stop()
        raise
    return triton


def texts_of(prefix: str, count: int, repeat: int = 10) -> list[str]:
    """Distinct, mixed Chinese/ASCII texts: each request's rows differ so a wrong order shows."""
    return [f"{prefix}-{i}：" + "今天天气不错 embedding " * repeat for i in range(count)]
