"""Texts of exact token lengths, checked with the real bge tokenizer."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from bge_deploy.bench.corpus import CORPUS
from bge_deploy.bench.workload import (
    LengthSpec,
    Request,
    Workload,
    WorkloadError,
    build_workload,
    perf_analyzer_input,
)


def count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text).ids)


@pytest.mark.parametrize(
    ("text", "low", "high", "label"),
    [("64", 64, 64, "64"), ("8-512", 8, 512, "8-512"), (" 3-3 ", 3, 3, "3"), ("512", 512, 512, "512")],
)
def test_length_spec_parses_fixed_and_uniform(text: str, low: int, high: int, label: str) -> None:
    spec = LengthSpec.parse(text)
    assert (spec.low, spec.high, spec.label) == (low, high, label)


@pytest.mark.parametrize("text", ["", "abc", "2", "513", "64-8", "8-600", "8-"])
def test_length_spec_rejects_what_the_model_cannot_take(text: str) -> None:
    with pytest.raises(WorkloadError):
        LengthSpec.parse(text)


def test_corpus_is_one_known_token_per_character(bge_tokenizer: Tokenizer) -> None:
    encoding = bge_tokenizer.encode(CORPUS, add_special_tokens=False)
    assert len(encoding.ids) == len(CORPUS)
    assert 100 not in encoding.ids  # [UNK]
    assert len(CORPUS) > 512  # a window of any allowed length fits before wrapping


@pytest.mark.parametrize("tokens", [3, 9, 64, 511, 512])
def test_fixed_lengths_are_exact(bge_tokenizer: Tokenizer, tokens: int) -> None:
    workload = build_workload(bge_tokenizer, LengthSpec(tokens, tokens), count=20, seed=1)
    assert [count(bge_tokenizer, t) for t in workload.texts] == [tokens] * 20
    assert workload.lengths == (tokens,) * 20
    assert len(set(workload.texts)) > 1  # cut from different places


def test_uniform_lengths_are_exact_and_spread(bge_tokenizer: Tokenizer) -> None:
    workload = build_workload(bge_tokenizer, LengthSpec(8, 512), count=300, seed=2)
    assert [count(bge_tokenizer, t) for t in workload.texts] == list(workload.lengths)
    assert min(workload.lengths) >= 8 and max(workload.lengths) <= 512
    assert min(workload.lengths) < 60 and max(workload.lengths) > 460
    assert 200 < workload.mean_tokens < 320


def test_workload_is_seeded(bge_tokenizer: Tokenizer) -> None:
    spec = LengthSpec(8, 128)
    assert build_workload(bge_tokenizer, spec, 10, seed=5) == build_workload(bge_tokenizer, spec, 10, seed=5)
    assert build_workload(bge_tokenizer, spec, 10, seed=5) != build_workload(bge_tokenizer, spec, 10, seed=6)


def test_requests_group_consecutive_texts_and_wrap_around() -> None:
    workload = Workload(LengthSpec(3, 9), texts=("a", "b", "c", "d", "e"), lengths=(3, 4, 5, 6, 7))
    assert workload.requests(1) == [Request((t,), n) for t, n in zip("abcde", (3, 4, 5, 6, 7), strict=True)]
    assert workload.requests(2) == [Request(("a", "b"), 7), Request(("c", "d"), 11)]
    assert workload.requests(8) == [Request(("a", "b", "c", "d", "e", "a", "b", "c"), 37)]
    with pytest.raises(WorkloadError):
        workload.requests(0)


def test_perf_analyzer_input_is_one_row_per_entry() -> None:
    assert perf_analyzer_input(["北京", "上海"]) == {
        "data": [{"text": {"content": ["北京"], "shape": [1]}}, {"text": {"content": ["上海"], "shape": [1]}}]
    }
