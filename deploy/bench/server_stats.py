"""What the server did during a run, from Triton's metrics endpoint scraped before and after.

The CPU encoder (model_repository/encoder/model.py) publishes its own counters on Triton's metrics
port, `bge_encoder_{real_tokens,computed_tokens,texts,runs}_total` (names in
`bge_model_repository.contract`), labelled with the encoder model's name (`<model>-encoder`). From their differences:

- mean encoder batch = texts / runs (rows per onnxruntime run, after the encoder's length-sorted split);
- padding ratio = computed / real tokens (1.0 = no padding computed).

Triton's own counters add the dynamic batcher's batch (inferences / executions) and the queue time per
encoder request. A server without the bge counters (e.g. the GPU container's native backends) gives
None for those values, never a made-up number.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import asdict, dataclass

from bge_model_repository.contract import (
    COMPUTED_TOKENS_METRIC,
    ENCODER_SUFFIX,
    REAL_TOKENS_METRIC,
    RUNS_METRIC,
    TEXTS_METRIC,
)

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition -> {(name, labels): value}; comments and malformed lines are skipped."""
    samples: Samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        pairs = frozenset((k, v.replace('\\"', '"').replace("\\\\", "\\")) for k, v in _LABEL.findall(labels or ""))
        samples[(name, pairs)] = number
    return samples


def metric_sum(samples: Samples, name: str, **labels: str) -> float | None:
    """Sum of `name` over every sample whose labels include `labels`; None if there is none."""
    wanted = set(labels.items())
    values = [v for (n, pairs), v in samples.items() if n == name and wanted <= pairs]
    return sum(values) if values else None


@dataclass(frozen=True)
class Counters:
    """One scrape's counters that matter for a run; None = the server does not publish it."""

    real_tokens: float | None
    computed_tokens: float | None
    encoder_texts: float | None
    encoder_runs: float | None
    encoder_inferences: float | None  # Triton: rows through the encoder model
    encoder_executions: float | None  # Triton: dynamic-batcher batches run
    encoder_requests: float | None
    encoder_queue_us: float | None
    ensemble_failures: float | None

    @classmethod
    def from_samples(cls, samples: Samples, model: str) -> Counters:
        encoder = model + ENCODER_SUFFIX
        return cls(
            real_tokens=metric_sum(samples, REAL_TOKENS_METRIC, model=encoder),
            computed_tokens=metric_sum(samples, COMPUTED_TOKENS_METRIC, model=encoder),
            encoder_texts=metric_sum(samples, TEXTS_METRIC, model=encoder),
            encoder_runs=metric_sum(samples, RUNS_METRIC, model=encoder),
            encoder_inferences=metric_sum(samples, "nv_inference_count", model=encoder),
            encoder_executions=metric_sum(samples, "nv_inference_exec_count", model=encoder),
            encoder_requests=metric_sum(samples, "nv_inference_request_success", model=encoder),
            encoder_queue_us=metric_sum(samples, "nv_inference_queue_duration_us", model=encoder),
            ensemble_failures=metric_sum(samples, "nv_inference_request_failure", model=model),
        )


def _delta(after: float | None, before: float | None) -> float | None:
    if after is None or before is None:
        return None
    return after - before


def _share(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class ServerStats:
    """What the server did between two scrapes."""

    real_tokens: float | None
    computed_tokens: float | None
    encoder_texts: float | None
    encoder_runs: float | None
    mean_encoder_batch: float | None  # texts / runs (onnxruntime runs)
    padding_ratio: float | None  # computed / real tokens
    mean_triton_batch: float | None  # inferences / executions of the encoder's dynamic batcher
    encoder_queue_ms: float | None  # mean time a request waited in the encoder's queue
    ensemble_failures: float | None

    @classmethod
    def between(cls, before: Counters, after: Counters) -> ServerStats:
        real = _delta(after.real_tokens, before.real_tokens)
        computed = _delta(after.computed_tokens, before.computed_tokens)
        texts = _delta(after.encoder_texts, before.encoder_texts)
        runs = _delta(after.encoder_runs, before.encoder_runs)
        queue_us = _delta(after.encoder_queue_us, before.encoder_queue_us)
        requests = _delta(after.encoder_requests, before.encoder_requests)
        queue = _share(queue_us, requests)
        return cls(
            real_tokens=real,
            computed_tokens=computed,
            encoder_texts=texts,
            encoder_runs=runs,
            mean_encoder_batch=_share(texts, runs),
            padding_ratio=_share(computed, real),
            mean_triton_batch=_share(
                _delta(after.encoder_inferences, before.encoder_inferences),
                _delta(after.encoder_executions, before.encoder_executions),
            ),
            encoder_queue_ms=None if queue is None else queue / 1000.0,
            ensemble_failures=_delta(after.ensemble_failures, before.ensemble_failures),
        )

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


class MetricsScraper:
    """Reads Triton's `/metrics` (default http://127.0.0.1:8002/metrics) for one model's counters."""

    def __init__(self, url: str, model: str, timeout_s: float = 5.0) -> None:
        url = url if "://" in url else f"http://{url}"
        self.url = url if url.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"
        self.model = model
        self.timeout_s = timeout_s

    def scrape(self) -> Counters | None:
        """The counters now, or None when the endpoint cannot be read (the run goes on without them)."""
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:
                text = response.read().decode("utf-8", errors="replace")
        except OSError:
            return None
        return Counters.from_samples(parse_metrics(text), self.model)
