"""Unit tests of text -> tokens (real bge tokenizer from ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import require_bge_assets

from bge_model_repository.contract import Truncate
from bge_model_repository.tokenization import (
    InputError,
    SpecialIds,
    common_width,
    decode_texts,
    load_tokenizer,
    parse_truncate,
    round_up,
    tokenize,
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(require_bge_assets())


def test_weather_sentence_is_nine_tokens_with_the_documented_ids(tokenizer) -> None:
    batch = tokenize(tokenizer, ["今天天气怎么样"], 512)
    assert batch.num_tokens.tolist() == [[9]]
    assert batch.input_ids[0].tolist() == [101, 791, 1921, 1921, 3698, 2582, 720, 3416, 102]
    assert batch.attention_mask.sum() == 9 and batch.token_type_ids.sum() == 0


def test_rows_are_right_padded_to_a_bucket(tokenizer) -> None:
    batch = tokenize(tokenizer, ["今天天气怎么样", "好"], 512, pad_to_multiple_of=8)
    assert batch.input_ids.shape == (2, 16)
    assert batch.num_tokens.ravel().tolist() == [9, 3]
    assert batch.attention_mask[1].tolist() == [1, 1, 1] + [0] * 13
    assert batch.input_ids.dtype == np.int64 and batch.num_tokens.dtype == np.int32


def test_end_and_start_truncation_keep_special_tokens(tokenizer) -> None:
    text = "甲" * 300 + "乙" * 300
    end = tokenize(tokenizer, [text], 512, Truncate.END)
    start = tokenize(tokenizer, [text], 512, Truncate.START)
    for batch in (end, start):
        assert batch.num_tokens.item() == 512
        assert batch.input_ids[0, 0] == 101 and batch.input_ids[0, -1] == 102
    jia, yi = tokenizer.token_to_id("甲"), tokenizer.token_to_id("乙")
    assert end.input_ids[0, 1] == jia and end.input_ids[0, -2] == yi
    assert start.input_ids[0, 1] == jia and start.input_ids[0, 2] == jia  # 300 甲 > 210 dropped
    assert (start.input_ids[0] == yi).sum() == 300 and (end.input_ids[0] == yi).sum() == 210


def test_truncate_none_names_the_token_count_and_limit(tokenizer) -> None:
    with pytest.raises(InputError, match=r"text 1 has 602 tokens, over the model's limit of 512"):
        tokenize(tokenizer, ["好", "好" * 600], 512, Truncate.NONE)
    assert tokenize(tokenizer, ["好" * 510], 512, Truncate.NONE).num_tokens.item() == 512


def test_twenty_thousand_characters_are_truncated_not_refused(tokenizer) -> None:
    batch = tokenize(tokenizer, ["数据" * 10_000], 512)
    assert batch.input_ids.shape == (1, 512)


def test_empty_text_is_cls_sep(tokenizer) -> None:
    assert tokenize(tokenizer, [""], 512).input_ids.tolist() == [[101, 102]]


def test_decode_names_the_bad_text() -> None:
    raw = np.array([[b"ok"], [b"\xff\xfe"]], dtype=object)
    with pytest.raises(InputError, match=r"text 1 is not valid UTF-8"):
        decode_texts(raw)
    assert decode_texts(np.array([["今天".encode()]], dtype=object)) == ["今天"]


def test_parse_truncate() -> None:
    assert parse_truncate(None) is Truncate.END
    assert parse_truncate("start") is Truncate.START
    with pytest.raises(InputError, match="END, START, NONE"):
        parse_truncate("MIDDLE")


@pytest.mark.parametrize(
    ("lengths", "multiple", "expected"), [([3, 9], 8, 16), ([512], 64, 512), ([], 8, 8), ([1], 1, 1)]
)
def test_common_width(lengths: list[int], multiple: int, expected: int) -> None:
    assert common_width(lengths, multiple, 512) == expected
    assert round_up(9, 8) == 16 and round_up(9, 1) == 9


def test_missing_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)


def test_special_ids_are_what_the_tokenizer_puts_around_every_text(tokenizer) -> None:
    ids = tokenize(tokenizer, ["今天天气怎么样", "hello"], 512).input_ids
    special = SpecialIds.of(tokenizer)
    assert (special.first, special.last) == (101, 102)
    assert {int(row[0]) for row in ids} == {special.first}


def test_a_tokenizer_without_special_tokens_has_no_special_ids() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    bare = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    assert SpecialIds.of(bare) == SpecialIds(None, None)


def _long_texts(seed: int) -> list[str]:
    """Long texts of the kinds that could trip a windowed cut: CJK, words, punctuation, runs of spaces,
    words of 90-200 letters (WordPiece's [UNK] limit is 100), emoji, and all of it mixed."""
    import random

    rng = random.Random(seed)
    pieces = ["今天天气怎么样", "hello", "world", "，", "。", " ", "   ", "\n", "🙂", "Ünïcödé", "x" * 95, "y" * 180]
    texts = []
    for _ in range(6):
        size = rng.choice([40_000, 90_000, 300_000])
        chunks, total = [], 0
        while total < size:
            chunk = rng.choice(pieces) + rng.choice(["", " "])
            chunks.append(chunk)
            total += len(chunk)
        texts.append("".join(chunks))
    texts.append(" " * 100_000 + "今天天气怎么样" + " " * 100_000)  # few tokens in many characters
    texts.append("z" * 200_000)  # one enormous word: one [UNK]
    return texts


@pytest.mark.parametrize("truncate", [Truncate.END, Truncate.START])
def test_long_texts_tokenize_from_a_window_exactly_as_whole(tokenizer, truncate: Truncate) -> None:
    from bge_model_repository import tokenization

    texts = _long_texts(seed=1)
    windowed = [e.ids for e in tokenization.encode(tokenizer, texts, 512, truncate)]
    tokenizer.enable_truncation(max_length=512, direction="right" if truncate is Truncate.END else "left")
    whole = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=True)]
    assert windowed == whole
    assert all(len(ids) <= 512 for ids in windowed)


def test_a_five_megabyte_text_is_cut_in_milliseconds(tokenizer) -> None:
    import resource
    import time

    text = "天气" * 2_621_440  # 5 MiB of characters, ~5.2M tokens if tokenized whole
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    batch = tokenize(tokenizer, [text], 512)
    elapsed = time.perf_counter() - start
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert batch.num_tokens.tolist() == [[512]]
    assert elapsed < 1.0, elapsed  # whole: 14 s on the 2-core dev box (2026-12-02)
    assert grown_mb < 100, grown_mb  # whole: +3.4 GB peak
    with pytest.raises(InputError, match=r"text 0 has more than 512 tokens \(5242880 characters\)"):
        tokenize(tokenizer, [text], 512, Truncate.NONE)
