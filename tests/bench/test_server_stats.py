"""Reading Triton's metrics text: the encoder's batch size and padding ratio between two scrapes."""

from __future__ import annotations

import pytest

from bge_deploy.bench.server_stats import Counters, MetricsScraper, ServerStats, metric_sum, parse_metrics
from bge_deploy.serving.process import free_port

# Trimmed from a real scrape of the pip tritonserver serving a tiny bge export named `bge-tiny`.
BEFORE = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="bge-tiny",version="1"} 1
nv_inference_request_success{model="bge-tiny-encoder",version="1"} 2
nv_inference_request_success{model="bge-tiny-tokenizer",version="1"} 1
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="bge-tiny",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="bge-tiny",reason="BACKEND",version="1"} 0
nv_inference_request_failure{model="bge-tiny",reason="REJECTED",version="1"} 0
nv_inference_request_failure{model="bge-tiny-encoder",reason="BACKEND",version="1"} 0
# TYPE nv_inference_count counter
nv_inference_count{model="bge-tiny",version="1"} 2
nv_inference_count{model="bge-tiny-encoder",version="1"} 3
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="bge-tiny",version="1"} 1
nv_inference_exec_count{model="bge-tiny-encoder",version="1"} 2
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="bge-tiny",version="1"} 2
nv_inference_queue_duration_us{model="bge-tiny-encoder",version="1"} 4436
# HELP bge_encoder_computed_tokens_total Tokens the encoder computed, padding included
# TYPE bge_encoder_computed_tokens_total counter
bge_encoder_computed_tokens_total{model="bge-tiny-encoder"} 32
bge_encoder_real_tokens_total{model="bge-tiny-encoder"} 16
# TYPE bge_encoder_runs_total counter
bge_encoder_runs_total{model="bge-tiny-encoder"} 2
bge_encoder_texts_total{model="bge-tiny-encoder"} 3
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.25
"""

# The same server after 40 requests of 4 texts (160 texts, 64 tokens each, in 20 onnxruntime runs),
# with one request rejected; another model's counters moved too and must not count.
AFTER = """\
nv_inference_request_success{model="bge-tiny",version="1"} 40
nv_inference_request_success{model="bge-tiny-encoder",version="1"} 41
nv_inference_request_failure{model="bge-tiny",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="bge-tiny",reason="BACKEND",version="1"} 0
nv_inference_request_failure{model="bge-tiny",reason="REJECTED",version="1"} 1
nv_inference_request_failure{model="bge-tiny-encoder",reason="BACKEND",version="1"} 0
nv_inference_count{model="bge-tiny",version="1"} 162
nv_inference_count{model="bge-tiny-encoder",version="1"} 163
nv_inference_exec_count{model="bge-tiny",version="1"} 30
nv_inference_exec_count{model="bge-tiny-encoder",version="1"} 22
nv_inference_queue_duration_us{model="bge-tiny",version="1"} 50
nv_inference_queue_duration_us{model="bge-tiny-encoder",version="1"} 82436
bge_encoder_computed_tokens_total{model="bge-tiny-encoder"} 12832
bge_encoder_real_tokens_total{model="bge-tiny-encoder"} 10256
bge_encoder_runs_total{model="bge-tiny-encoder"} 22
bge_encoder_texts_total{model="bge-tiny-encoder"} 163
bge_encoder_computed_tokens_total{model="other-encoder"} 99999
bge_encoder_real_tokens_total{model="other-encoder"} 1
"""


def test_parse_metrics_reads_samples_and_skips_comments() -> None:
    samples = parse_metrics(BEFORE)
    key = ("bge_encoder_real_tokens_total", frozenset({("model", "bge-tiny-encoder")}))
    assert samples[key] == 16.0
    assert samples[("nv_cpu_utilization", frozenset())] == 0.25
    assert not any(name.startswith("#") for name, _ in samples)


def test_parse_metrics_tolerates_escapes_timestamps_and_junk() -> None:
    text = 'm{a="x\\"y",b="z"} 3 1700000000000\nnot a sample line\nm{a="q"} NaNish\nm 1e3\n'
    samples = parse_metrics(text)
    assert samples[("m", frozenset({("a", 'x"y'), ("b", "z")}))] == 3.0
    assert samples[("m", frozenset())] == 1000.0
    assert len(samples) == 2


def test_metric_sum_adds_every_matching_label_set() -> None:
    samples = parse_metrics(AFTER)
    assert metric_sum(samples, "nv_inference_request_failure", model="bge-tiny") == 1.0
    assert metric_sum(samples, "bge_encoder_real_tokens_total", model="bge-tiny-encoder") == 10256
    assert metric_sum(samples, "no_such_metric") is None


def test_batch_size_and_padding_ratio_between_two_scrapes() -> None:
    before = Counters.from_samples(parse_metrics(BEFORE), "bge-tiny")
    after = Counters.from_samples(parse_metrics(AFTER), "bge-tiny")
    stats = ServerStats.between(before, after)
    assert stats.encoder_texts == 160 and stats.encoder_runs == 20
    assert stats.mean_encoder_batch == 8.0
    assert stats.real_tokens == 10240 and stats.computed_tokens == 12800
    assert stats.padding_ratio == pytest.approx(1.25)
    assert stats.mean_triton_batch == 8.0  # 160 rows in 20 dynamic-batcher executions
    assert stats.encoder_queue_ms == pytest.approx(78.0 / 39)  # 78 ms of queueing over 39 requests
    assert stats.ensemble_failures == 1


def test_a_server_without_bge_counters_gives_none_not_numbers() -> None:
    plain = "\n".join(line for line in AFTER.splitlines() if not line.startswith("bge_"))
    before = Counters.from_samples(parse_metrics(plain), "bge-tiny")
    stats = ServerStats.between(before, before)
    assert stats.padding_ratio is None and stats.mean_encoder_batch is None
    assert stats.mean_triton_batch is None  # no executions in between: no batch to speak of
    assert stats.to_dict()["real_tokens"] is None


def test_scraper_returns_none_when_nothing_listens() -> None:
    scraper = MetricsScraper(f"127.0.0.1:{free_port()}", "bge-tiny", timeout_s=1.0)
    assert scraper.url.startswith("http://127.0.0.1:") and scraper.url.endswith("/metrics")
    assert scraper.scrape() is None
