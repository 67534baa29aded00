"""The token-id rule (unit): the model's own rows pass and are truncated like text; other tokenizers' do not."""

from __future__ import annotations

import pytest

from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.token_ids import TokenRowRule
from bge_model_repository.contract import Truncate

RULE = TokenRowRule("bge-large-zh-v1.5", max_length=5, vocab_size=21128, first=101, last=102)
HELLO_WORLD_CL100K = [15339, 1917]  # "hello world" in tiktoken's cl100k_base, what LangChain sends


def _refusal(rule: TokenRowRule, rows: list[list[int]]) -> str:
    with pytest.raises(GatewayError) as info:
        rule.check(rows, Truncate.END)
    assert info.value.kind is ErrorKind.VALIDATION and info.value.param == "input"
    return info.value.message


def test_the_models_own_rows_pass_unchanged() -> None:
    assert RULE.check([[101, 791, 102], [101, 102]], Truncate.END) == [[101, 791, 102], [101, 102]]


@pytest.mark.parametrize(
    ("row", "why"),
    [
        (HELLO_WORLD_CL100K, "does not start with [CLS] (101) and end with [SEP] (102)"),
        ([101, 91985, 102], "holds id 91985, outside bge-large-zh-v1.5's vocabulary of 21128"),
        ([101, 791], "does not start with [CLS]"),
        ([791, 102], "does not start with [CLS]"),
        ([101], "does not start with [CLS]"),
    ],
)
def test_other_rows_are_refused_naming_the_row_the_cause_and_the_fix(row: list[int], why: str) -> None:
    message = _refusal(RULE, [[101, 102], row])
    assert message.startswith(f"input[1] {why}")
    assert "check_embedding_ctx_length=False" in message and "BGE_GATEWAY_RAW_TOKEN_IDS=true" in message


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(Truncate.END, [101, 1, 2, 3, 102]), (Truncate.START, [101, 4, 5, 6, 102])],
)
def test_truncation_keeps_cls_and_sep_as_the_tokenizer_does(mode: Truncate, expected: list[int]) -> None:
    assert RULE.check([[101, 1, 2, 3, 4, 5, 6, 102]], mode) == [expected]


def test_truncate_none_refuses_with_count_and_limit() -> None:
    with pytest.raises(GatewayError) as info:
        RULE.check([[101, 102], [101, *[7] * 600, 102]], Truncate.NONE)
    assert "input[1] has 602 tokens, over the model's limit of 5" in info.value.message


def test_raw_rows_are_taken_as_given_and_cut_plainly() -> None:
    raw = TokenRowRule("m", max_length=3, vocab_size=21128, first=101, last=102, raw=True)
    assert raw.check([HELLO_WORLD_CL100K], Truncate.END) == [HELLO_WORLD_CL100K]
    assert raw.check([[1, 2, 3, 4, 5]], Truncate.END) == [[1, 2, 3]]
    assert raw.check([[1, 2, 3, 4, 5]], Truncate.START) == [[3, 4, 5]]


def test_an_export_that_did_not_say_leaves_only_what_is_known() -> None:
    """Repositories exported before the rule have no [CLS]/[SEP] parameters: only the limit applies."""
    unknown = TokenRowRule("m", max_length=5, vocab_size=None, first=None, last=None)
    assert unknown.check([HELLO_WORLD_CL100K], Truncate.END) == [HELLO_WORLD_CL100K]
    assert unknown.check([[1, 2, 3, 4, 5, 6]], Truncate.END) == [[1, 2, 3, 4, 5]]
