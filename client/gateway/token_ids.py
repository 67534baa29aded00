"""Token-id input: only rows that are this model's own ids, truncated the way the model's tokenizer truncates.

OpenAI's API lets `input` be token ids, and LangChain's `OpenAIEmbeddings` sends them by default: it
tokenizes with tiktoken (cl100k) and posts the ids. Those are another vocabulary's numbers. For ASCII
text most of them happen to lie inside bge's vocabulary, so embedding them "works" and returns vectors
of cosine 0.65-0.69 to the right ones: a silent wrong answer. The rule that tells the two apart is the
one the model's tokenizer always follows: every row it writes starts with the token it puts before a
text ([CLS], 101 for bge) and ends with the one it puts after ([SEP], 102), and every id is below the
vocabulary size. Another tokenizer's row passes only if its first id happens to be 101 and its last
102, which real text almost never gives. Rows that break the rule get a
400 that names the likely cause and the fix. `raw_token_ids` (an operator's setting) accepts rows as
given, for callers who build their own rows on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.inference import ModelInfo
from bge_model_repository.contract import Truncate, over_limit

LANGCHAIN_FIX = (
    "LangChain's OpenAIEmbeddings sends tiktoken ids by default: create it with "
    "check_embedding_ctx_length=False so it sends the text, or send text yourself"
)
RAW_IDS_SETTING = "BGE_GATEWAY_RAW_TOKEN_IDS=true"


@dataclass(frozen=True)
class TokenRowRule:
    """What a row of the served model's own token ids looks like, and the model's token limit."""

    model: str
    max_length: int
    vocab_size: int | None
    first: int | None  # [CLS]
    last: int | None  # [SEP]
    raw: bool = False  # accept rows as given (only the limit applies)

    @classmethod
    def of(cls, model: str, info: ModelInfo, raw: bool) -> TokenRowRule:
        return cls(model, info.max_length, info.vocab_size, info.cls_token_id, info.sep_token_id, raw)

    def describe(self) -> str:
        parts = []
        if self.first is not None and self.last is not None:
            parts.append(f"start with [CLS] (id {self.first}) and end with [SEP] (id {self.last})")
        if self.vocab_size is not None:
            parts.append(f"hold ids below {self.vocab_size}")
        return " and ".join(parts)

    def problem(self, row: list[int]) -> str | None:
        """Why `row` is not this model's token ids, or None if it is (or the rule is off)."""
        if self.raw:
            return None
        if self.vocab_size is not None and max(row) >= self.vocab_size:
            return f"holds id {max(row)}, outside {self.model}'s vocabulary of {self.vocab_size}"
        ends_known = self.first is not None and self.last is not None
        if ends_known and (len(row) < 2 or row[0] != self.first or row[-1] != self.last):
            return f"does not start with [CLS] ({self.first}) and end with [SEP] ({self.last})"
        return None

    def check(self, rows: list[list[int]], truncate: Truncate) -> list[list[int]]:
        """The rows to embed: each checked, then cut to the limit keeping [CLS] and [SEP], as text is."""
        out = []
        for i, row in enumerate(rows):
            problem = self.problem(row)
            if problem is not None:
                raise GatewayError(
                    ErrorKind.VALIDATION,
                    f"input[{i}] {problem}, so it is not {self.model}'s token ids (rows of its tokenizer "
                    f"{self.describe()}). {LANGCHAIN_FIX}. Operators can accept raw rows with {RAW_IDS_SETTING}.",
                    param="input",
                )
            out.append(self.truncate(row, truncate, f"input[{i}]"))
        return out

    def truncate(self, row: list[int], truncate: Truncate, where: str) -> list[int]:
        """Apply the request's truncation to one row; [CLS] and [SEP] survive it unless rows are raw."""
        limit = self.max_length
        if len(row) <= limit:
            return row
        if truncate == Truncate.NONE:
            raise GatewayError(ErrorKind.VALIDATION, f"{where} {over_limit(len(row), limit)}", param="input")
        keep_ends = not self.raw and self.first is not None and self.last is not None
        if truncate == Truncate.END:
            return row[: limit - 1] + row[-1:] if keep_ends else row[:limit]
        return row[:1] + row[len(row) - limit + 1 :] if keep_ends else row[-limit:]
