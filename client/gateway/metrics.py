"""Prometheus metrics of the gateway, in a registry per app so several apps can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_BUCKETS = (16, 64, 128, 256, 512, 1024, 4096, 16384, 65536, 262144, 1048576)
"""Tokens in one request: one short text (16) up to 2048 texts of 512 tokens (about 1M)."""

# No `<name>_created` series beside every counter and histogram: dashboards never use them, and they
# double the exposition of a labelled counter. (A process-wide switch of prometheus_client.)
disable_created_metrics()


class Metrics:
    """Requests, errors by reason, texts, tokens, latency and Triton round-trip time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bge_gateway_requests",
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "bge_gateway_errors", "Failed requests by error reason.", ["reason"], registry=self.registry
        )
        self.texts = Counter("bge_gateway_texts", "Inputs embedded (duplicates included).", registry=self.registry)
        self.tokens = Counter("bge_gateway_tokens", "Tokens embedded, as counted by the model.", registry=self.registry)
        self.in_flight = Gauge("bge_gateway_requests_in_flight", "HTTP requests being handled.", registry=self.registry)
        self.admitted = Gauge(
            "bge_gateway_embedding_slots_in_use",
            "Embedding requests holding one of max_concurrent_requests slots (an abandoned "
            "request holds its slot until its Triton calls have ended).",
            registry=self.registry,
        )
        self.latency = Histogram(
            "bge_gateway_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens_per_request = Histogram(
            "bge_gateway_request_tokens",
            "Tokens in one embedding request (after truncation), as counted by the model.",
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.triton_seconds = Histogram(
            "bge_gateway_triton_duration_seconds",
            "Round-trip time of one Triton inference call.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.inflight_capacity = Gauge(
            "bge_gateway_triton_token_capacity",
            "Tokens of calls the gateway lets into Triton at once (max_inflight_tokens).",
            registry=self.registry,
        )
        self.inflight_tokens = Gauge(
            "bge_gateway_triton_tokens_in_flight",
            "Tokens (upper bound from characters) of the calls now in Triton.",
            registry=self.registry,
        )
        self.queued_chunks = Gauge(
            "bge_gateway_queued_chunks",
            "Chunks waiting in the gateway for room in Triton.",
            registry=self.registry,
        )
        self.fair_share_wait_seconds = Histogram(
            "bge_gateway_queue_wait_seconds",
            "Time one chunk waited in the gateway for room in Triton.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def count_error(self, reason: str) -> None:
        self.errors.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def summary(self) -> str:
        """One line for the shutdown log: requests answered, by route and status."""
        counts: dict[str, dict[str, int]] = {}
        for family in self.requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    by_status = counts.setdefault(sample.labels["route"], {})
                    by_status[sample.labels["status"]] = int(sample.value)
        if not counts:
            return "answered no requests"
        return "answered " + "; ".join(
            f"{route}: {sum(by_status.values())} ("
            + ", ".join(f"{status}: {n}" for status, n in sorted(by_status.items()))
            + ")"
            for route, by_status in sorted(counts.items())
        )
