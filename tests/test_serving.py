"""Real tritonserver + real tritonclient over gRPC and HTTP, against the PyTorch reference."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bge_export.parity import reference_embeddings

TEXTS = [
    "今天天气怎么样",
    "我喜欢看电影",
    "他热爱运动",
    "这部电影非常精彩",
    "Retrieval-augmented generation needs good embeddings.",
    "长文本" * 120,
    "a",
]


def infer(
    client: grpcclient.InferenceServerClient | httpclient.InferenceServerClient,
    model: str,
    texts: list[str] | list[bytes],
    **kwargs: object,
) -> tuple[np.ndarray, np.ndarray]:
    module = grpcclient if isinstance(client, grpcclient.InferenceServerClient) else httpclient
    data = np.array([[t.encode() if isinstance(t, str) else t] for t in texts], dtype=object)
    tensor = module.InferInput("text", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor], **kwargs)
    return result.as_numpy("embedding"), result.as_numpy("num_tokens")


@pytest.fixture(scope="module", params=["grpc", "http"])
def make_client(request: pytest.FixtureRequest, triton):
    """A client factory: tritonclient.http runs on gevent, so each thread needs its own client."""
    if request.param == "grpc":
        return lambda: grpcclient.InferenceServerClient(triton.grpc_url)
    return lambda: httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))


@pytest.fixture(scope="module")
def client(make_client):
    return make_client()


@pytest.fixture(scope="module")
def tiny_reference(triton) -> np.ndarray:
    return reference_embeddings(triton.bge.source_dir if triton.bge else None, TEXTS, 512) if triton.bge else None


def test_one_request_matches_pytorch_reference(client, triton, tiny_reference) -> None:
    vectors, tokens = infer(client, triton.model_name, TEXTS)
    assert vectors.shape == (len(TEXTS), triton.dim) and vectors.dtype == np.float32
    assert tokens.shape == (len(TEXTS), 1) and tokens.dtype == np.int32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(vectors * tiny_reference, axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_weather_sentence_counts_nine_tokens(client, triton) -> None:
    _, tokens = infer(client, triton.model_name, ["今天天气怎么样"])
    assert tokens.ravel().tolist() == [9]


def test_concurrent_requests_of_different_lengths(make_client, triton, tiny_reference) -> None:
    """Each text alone, 32 requests at once: the ragged batcher must keep every row its own."""
    jobs = [i % len(TEXTS) for i in range(32)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: infer(make_client(), triton.model_name, [TEXTS[i]]), jobs))
    for i, (vector, _) in zip(jobs, results, strict=True):
        assert float(vector[0] @ tiny_reference[i]) >= 0.9999


def test_minilm_real_weights_match_sentence_transformers(client, triton) -> None:
    texts = ["A man is eating food.", "A man is riding a horse.", "今天天气怎么样", "word " * 400]
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(triton.minilm.source_dir), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    vectors, tokens = infer(client, triton.minilm.name, texts)
    assert vectors.shape == (4, 384)
    assert np.sum(vectors * reference, axis=1).min() >= 0.99999
    assert tokens.ravel()[-1] == 256  # MiniLM's sentence-transformers limit


def test_overlapped_batches_keep_every_row_its_own(make_client, triton) -> None:
    """MiniLM runs 2 lanes and takes Triton's next batch while the last one finishes: 48 requests of 1-3
    distinct texts from 8 clients each get their own sentence-transformers vectors, in order."""
    from sentence_transformers import SentenceTransformer

    texts = [f"第{i}个句子：" + "向量 " * (i % 7 * 9) + f"sentence {i}" for i in range(96)]
    reference = SentenceTransformer(str(triton.minilm.source_dir), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    requests = [list(range(start, start + 1 + start % 3)) for start in range(0, 96, 2)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda rows: infer(make_client(), triton.minilm.name, [texts[r] for r in rows]), requests)
        )
    for rows, (vectors, _) in zip(requests, results, strict=True):
        assert vectors.shape == (len(rows), 384)
        assert np.sum(vectors * reference[rows], axis=1).min() >= 0.99999, rows
    said = triton.server.log_text()
    assert f"'{triton.minilm.name}-encoder': onnxruntime encoder, 2 lane(s) x 1 thread(s)" in said
    assert "2 batch(es) at once" in said


def test_empty_and_very_long_texts_get_answers(client, triton) -> None:
    vectors, tokens = infer(client, triton.model_name, ["", "数" * 20_000])
    assert tokens.ravel().tolist() == [2, 512]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_truncate_parameter(client, triton) -> None:
    text = "甲" * 300 + "乙" * 300
    _, tokens = infer(client, triton.model_name, [text], parameters={"truncate": "START"})
    assert tokens.item() == 512
    # real weights tell the kept halves apart: MiniLM (256-token limit) on apples vs engines
    story = "I ate a fresh red apple. " * 60 + "The car engine would not start. " * 60
    end, _ = infer(client, triton.minilm.name, [story], parameters={"truncate": "END"})
    start, _ = infer(client, triton.minilm.name, [story], parameters={"truncate": "START"})
    assert float(end[0] @ start[0]) < 0.9
    with pytest.raises(InferenceServerException, match="text 0 has 602 tokens, over the model's limit of 512"):
        infer(client, triton.model_name, [text], parameters={"truncate": "NONE"})
    with pytest.raises(InferenceServerException, match="truncate must be one of END, START, NONE"):
        infer(client, triton.model_name, ["x"], parameters={"truncate": "MIDDLE"})


def test_bad_inputs_get_clear_errors_and_the_server_keeps_serving(client, make_client, triton) -> None:
    with pytest.raises(InferenceServerException, match="text 1 is not valid UTF-8") as bad_utf8:
        infer(client, triton.model_name, [b"ok", b"\xff\xfe\xfd"])
    assert "INVALID_ARG" in str(bad_utf8.value.status()) or bad_utf8.value.status() == "400"
    with pytest.raises(InferenceServerException, match=f"batch-size must be <= {triton.max_batch_size}"):
        infer(client, triton.model_name, ["文本"] * 1000)
    # a bad request in the same dynamic batch as good ones fails alone
    with ThreadPoolExecutor(max_workers=4) as pool:
        bad = pool.submit(lambda: infer(make_client(), triton.model_name, [b"\xc3\x28"]))
        good = [pool.submit(lambda: infer(make_client(), triton.model_name, ["好"])) for _ in range(6)]
        with pytest.raises(InferenceServerException, match="UTF-8"):
            bad.result()
        assert all(g.result()[1].item() == 3 for g in good)
    assert client.is_model_ready(triton.model_name)
    vectors, _ = infer(client, triton.model_name, ["还在服务吗"])
    assert abs(float(np.linalg.norm(vectors)) - 1.0) < 1e-5


def test_token_ids_straight_to_the_encoder(triton, tiny_reference) -> None:
    """Token-id input (used by the gateway) skips the tokenizer and gives the same vector."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    ids = np.array([[101, 791, 1921, 1921, 3698, 2582, 720, 3416, 102]], dtype=np.int64)
    inputs = []
    for name, value in (("input_ids", ids), ("attention_mask", np.ones_like(ids)), ("token_type_ids", 0 * ids)):
        tensor = grpcclient.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    vector = client.infer(f"{triton.model_name}-encoder", inputs).as_numpy("embedding")
    assert float(vector[0] @ tiny_reference[0]) >= 0.9999
    inputs[0].set_data_from_numpy(ids + 50_000)
    with pytest.raises(InferenceServerException, match=r"token ids must be in \[0, 21128\)"):
        client.infer(f"{triton.model_name}-encoder", inputs)
    inputs[0].set_data_from_numpy(ids)
    inputs[2].set_data_from_numpy(ids * 0 + 2)  # a segment id the model has no embedding for
    with pytest.raises(InferenceServerException, match=r"token_type_ids must be in \[0, 2\)"):
        client.infer(f"{triton.model_name}-encoder", inputs)
    inputs[2].set_data_from_numpy(0 * ids)
    holes = np.ones_like(ids)
    holes[0, 3] = 0
    inputs[1].set_data_from_numpy(holes)  # the encoder keeps rows by their mask's sum: a hole would shift them
    with pytest.raises(InferenceServerException, match="1s then 0s"):
        client.infer(f"{triton.model_name}-encoder", inputs)


def test_encoder_reports_padding_and_batches_in_triton_metrics(triton) -> None:
    """Triton's exposition parses; our encoder's counters are one quantity per name; the launcher turned
    Triton's latency summaries on (quantiles per model, not only cumulative microseconds)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(triton.metrics_url, timeout=5).read().decode()
    families = {family.name: family for family in text_string_to_metric_families(body)}
    encoder = f"{triton.model_name}-encoder"

    def value(name: str) -> float:
        (sample,) = [s for s in families[name].samples if s.labels.get("model") == encoder]
        assert set(sample.labels) == {"model"}, sample.labels  # no "kind" label mixing quantities
        return sample.value

    real, computed = value("bge_encoder_real_tokens"), value("bge_encoder_computed_tokens")
    texts, runs = value("bge_encoder_texts"), value("bge_encoder_runs")
    assert 0 < real <= computed and 0 < runs <= texts
    summary = families["nv_inference_request_summary_us"]
    assert summary.type == "summary"
    ours = [s for s in summary.samples if s.labels.get("model") == encoder]
    quantiles = {s.labels["quantile"] for s in ours if "quantile" in s.labels}
    assert quantiles == {"0.5", "0.9", "0.99"}
