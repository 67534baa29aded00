"""Text -> encoder inputs, with the model's own fast tokenizer.

Pure functions over numpy so they are unit-tested without Triton. The Triton model
(`tokenizer/model.py`) only moves tensors in and out.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from bge_model_repository.contract import DEFAULT_TRUNCATE, RowError, Truncate, over_limit


class InputError(ValueError):
    """Input that the caller must fix; rendered as INVALID_ARGUMENT, never a crash."""

    @classmethod
    def in_row(cls, row: int, problem: str) -> InputError:
        """About one text of the request, in the contract's row-error form (the gateway maps the row back)."""
        return cls(RowError(row, problem).message())


@dataclass(frozen=True)
class SpecialIds:
    """The single special token the tokenizer puts before and after every text (BERT: [CLS], [SEP]).

    What a row of this model's own token ids looks like, so callers can tell them from another
    tokenizer's ids (tiktoken's, say) instead of embedding those into wrong vectors.
    """

    first: int | None
    last: int | None

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> SpecialIds:
        encoding = tokenizer.encode("a", add_special_tokens=True)
        mask, ids = encoding.special_tokens_mask, encoding.ids
        lead = len(list(itertools.takewhile(bool, mask)))
        trail = len(list(itertools.takewhile(bool, reversed(mask))))
        return cls(ids[0] if lead == 1 else None, ids[-1] if trail == 1 and len(ids) > 1 else None)


@dataclass(frozen=True)
class TokenBatch:
    """Encoder inputs for n texts, right-padded to one length."""

    input_ids: np.ndarray  # int64 [n, L]
    attention_mask: np.ndarray  # int64 [n, L]
    token_type_ids: np.ndarray  # int64 [n, L]
    num_tokens: np.ndarray  # int32 [n, 1]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def load_tokenizer(directory: Path) -> Tokenizer:
    """Load ``tokenizer.json`` (HF fast tokenizer); padding is done here, not by the tokenizer."""
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {directory}: export the model with bge-export")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def decode_texts(raw: np.ndarray) -> list[str]:
    """BYTES tensor ([n] or [n, 1]) -> str, naming the first text that is not UTF-8."""
    texts: list[str] = []
    for i, item in enumerate(raw.reshape(-1)):
        if isinstance(item, str):
            texts.append(item)
            continue
        try:
            texts.append(bytes(item).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError.in_row(i, f"is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return texts


def round_up(value: int, multiple: int) -> int:
    """Round to a bucket so requests of near lengths share one shape (Triton batches equal shapes)."""
    if multiple <= 1:
        return value
    return -(-value // multiple) * multiple


LONG_TEXT_CHARS = 32_768
"""Texts longer than this are tokenized from a window at the end that truncation keeps, not whole: a 5 MB
text would otherwise cost seconds and about a gigabyte in the tokenizer before 512 tokens are kept."""

CUT_MARGIN_CHARS = 1_000
"""Tokens that start (END) or end (START) this close to a window's cut are recomputed from a bigger window:
only they can belong to a word the cut split. BERT's WordPiece turns any word over 100 characters into one
[UNK], so a margin over 100 makes the windowed result identical to tokenizing the whole text."""


def _window(tokenizer: Tokenizer, text: str, tokens: int, keep_end: bool) -> str | None:
    """The smallest window (from a few thousand characters, four times bigger each try) at the start of
    `text` (the end, with `keep_end`) whose first (last) `tokens` tokens, special tokens counted, are those
    of the whole text; None if only the whole text will do."""
    window = max(4 * tokens, 2 * CUT_MARGIN_CHARS)
    tokenizer.no_truncation()
    while window + CUT_MARGIN_CHARS < len(text):
        piece = text[-window:] if keep_end else text[:window]
        encoding = tokenizer.encode(piece, add_special_tokens=True)
        pairs = zip(encoding.special_tokens_mask, encoding.offsets, strict=True)
        if keep_end:
            safe = sum(1 for special, (_, end) in pairs if special or end > CUT_MARGIN_CHARS)
        else:
            safe = sum(1 for special, (start, _) in pairs if special or start < window - CUT_MARGIN_CHARS)
        if safe >= tokens:
            return piece
        window *= 4
    return None


def encode(
    tokenizer: Tokenizer, texts: list[str], max_length: int, truncate: Truncate = DEFAULT_TRUNCATE
) -> list[Encoding]:
    """Tokenize with special tokens, cut at `max_length` (special tokens included).

    Texts over LONG_TEXT_CHARS are tokenized from the window truncation keeps (`_window`), with the same
    result; with truncate=NONE such a text is refused as soon as a window shows it is over the limit.
    """
    texts = list(texts)
    for i, text in enumerate(texts):
        if len(text) <= LONG_TEXT_CHARS:
            continue
        if truncate is Truncate.NONE:
            if _window(tokenizer, text, max_length + 1, keep_end=False) is not None:
                raise InputError.in_row(
                    i,
                    f"has more than {max_length} tokens ({len(text)} characters), over the model's limit of "
                    f"{max_length}; send it with truncate END or START, or split it",
                )
        else:
            texts[i] = _window(tokenizer, text, max_length, keep_end=truncate is Truncate.START) or text
    if truncate is Truncate.NONE:
        tokenizer.no_truncation()
    else:
        direction = "right" if truncate is Truncate.END else "left"
        tokenizer.enable_truncation(max_length=max_length, direction=direction)
    encodings = tokenizer.encode_batch(texts, add_special_tokens=True)
    if truncate is Truncate.NONE:
        for i, enc in enumerate(encodings):
            if len(enc.ids) > max_length:
                raise InputError.in_row(i, over_limit(len(enc.ids), max_length))
    return encodings


def pad(encodings: list[Encoding], width: int) -> TokenBatch:
    """Right-pad to `width` columns with [PAD]=0 and a zero attention mask."""
    n = len(encodings)
    ids = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    types = np.zeros((n, width), dtype=np.int64)
    lengths = np.zeros((n, 1), dtype=np.int32)
    for row, enc in enumerate(encodings):
        k = len(enc.ids)
        ids[row, :k] = enc.ids
        mask[row, :k] = 1
        types[row, :k] = enc.type_ids
        lengths[row, 0] = k
    return TokenBatch(ids, mask, types, lengths)


def common_width(lengths: list[int], pad_to_multiple_of: int, max_length: int) -> int:
    """One width for every request tokenized together, so the encoder's batcher can merge them."""
    longest = max(lengths, default=1)
    return max(1, min(round_up(longest, pad_to_multiple_of), max(max_length, longest)))


def tokenize(
    tokenizer: Tokenizer,
    texts: list[str],
    max_length: int,
    truncate: Truncate = DEFAULT_TRUNCATE,
    pad_to_multiple_of: int = 1,
) -> TokenBatch:
    """encode + pad for one group of texts."""
    encodings = encode(tokenizer, texts, max_length, truncate)
    width = common_width([len(e.ids) for e in encodings], pad_to_multiple_of, max_length)
    return pad(encodings, width)


def parse_truncate(value: object) -> Truncate:
    """Request parameter -> Truncate, with a message listing the accepted values."""
    if value is None or value == "":
        return DEFAULT_TRUNCATE
    try:
        return Truncate(str(value).upper())
    except ValueError:
        allowed = ", ".join(t.value for t in Truncate)
        raise InputError(f"truncate must be one of {allowed}, got {value!r}") from None
