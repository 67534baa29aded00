"""Text -> encoder inputs, with the model's own fast tokenizer.

Pure functions over numpy so they are unit-tested without Triton. The Triton model
(`tokenizer/model.py`) only moves tensors in and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer


class Truncate(str, Enum):
    """Which end of an over-long text is cut (NONE: refuse it instead)."""

    END = "END"
    START = "START"
    NONE = "NONE"


class InputError(ValueError):
    """Input that the caller must fix; rendered as INVALID_ARGUMENT, never a crash."""


@dataclass(frozen=True)
class TokenBatch:
    """Encoder inputs for n texts, right-padded to one length."""

    input_ids: np.ndarray  # int64 [n, L]
    attention_mask: np.ndarray  # int64 [n, L]
    token_type_ids: np.ndarray  # int64 [n, L]
    num_tokens: np.ndarray  # int32 [n, 1]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def slice(self, start: int, stop: int, width: int | None = None) -> TokenBatch:
        """Rows [start, stop), cut to `width` columns (all columns beyond it are padding)."""
        width = self.input_ids.shape[1] if width is None else width
        return TokenBatch(
            self.input_ids[start:stop, :width],
            self.attention_mask[start:stop, :width],
            self.token_type_ids[start:stop, :width],
            self.num_tokens[start:stop],
        )


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
            raise InputError(f"text {i} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return texts


def round_up(value: int, multiple: int) -> int:
    """Round to a bucket so requests of near lengths share one shape (Triton batches equal shapes)."""
    if multiple <= 1:
        return value
    return -(-value // multiple) * multiple


def encode(
    tokenizer: Tokenizer, texts: list[str], max_length: int, truncate: Truncate = Truncate.END
) -> list[Encoding]:
    """Tokenize with special tokens, cut at `max_length` (special tokens included)."""
    if truncate is Truncate.NONE:
        tokenizer.no_truncation()
    else:
        direction = "right" if truncate is Truncate.END else "left"
        tokenizer.enable_truncation(max_length=max_length, direction=direction)
    encodings = tokenizer.encode_batch(texts, add_special_tokens=True)
    if truncate is Truncate.NONE:
        for i, enc in enumerate(encodings):
            if len(enc.ids) > max_length:
                raise InputError(
                    f"text {i} has {len(enc.ids)} tokens, over the model's limit of {max_length} "
                    "(truncate=NONE; use END or START to cut it)"
                )
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
    truncate: Truncate = Truncate.END,
    pad_to_multiple_of: int = 1,
) -> TokenBatch:
    """encode + pad for one group of texts."""
    encodings = encode(tokenizer, texts, max_length, truncate)
    width = common_width([len(e.ids) for e in encodings], pad_to_multiple_of, max_length)
    return pad(encodings, width)


def parse_truncate(value: object) -> Truncate:
    """Request parameter -> Truncate, with a message listing the accepted values."""
    if value is None or value == "":
        return Truncate.END
    try:
        return Truncate(str(value).upper())
    except ValueError:
        allowed = ", ".join(t.value for t in Truncate)
        raise InputError(f"truncate must be one of {allowed}, got {value!r}") from None
