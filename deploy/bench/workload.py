"""Benchmark texts of exact token lengths, cut from real Chinese prose with the model's own tokenizer.

A length counts what the server counts (`num_tokens`): the text's tokens plus [CLS] and [SEP]. Every
text is checked against the tokenizer, so "64 tokens" means 64 in the encoder, not 64 characters.

`python -m bge_deploy.bench.workload --model-dir DIR --lengths 64 --count 200 --out FILE.json` writes
the same texts as perf_analyzer `--input-data` (see deploy/perf_analyzer/).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from bge_deploy.bench.corpus import CORPUS
from bge_model_repository.contract import TEXT
from bge_model_repository.logs import configure_logging
from bge_model_repository.tokenization import load_tokenizer

MAX_TOKENS = 512
"""BERT's position limit, [CLS] and [SEP] included (docs/CONTRACT.md)."""

"""The ensemble's input tensor (docs/CONTRACT.md)."""

log = logging.getLogger("bge-bench")


class WorkloadError(ValueError):
    """A length spec or tokenizer that cannot give texts of the asked lengths."""


@dataclass(frozen=True)
class LengthSpec:
    """Token lengths: `low == high` is a fixed length, otherwise uniform over [low, high]."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> LengthSpec:
        """`"64"` -> fixed 64; `"8-512"` -> uniform 8..512 (both ends included)."""
        low_text, dash, high_text = text.strip().partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise WorkloadError(f"length '{text}' is not N or A-B (token counts, e.g. 64 or 8-512)") from None
        if not 3 <= low <= high <= MAX_TOKENS:
            raise WorkloadError(
                f"length '{text}' must satisfy 3 <= A <= B <= {MAX_TOKENS} (counts include [CLS] and [SEP])"
            )
        return cls(low, high)

    @property
    def label(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"

    def sample(self, rng: random.Random, count: int) -> list[int]:
        return [rng.randint(self.low, self.high) for _ in range(count)]


@dataclass(frozen=True)
class Request:
    """Texts sent together in one request, and their total tokens (what the server will count)."""

    texts: tuple[str, ...]
    tokens: int


@dataclass(frozen=True)
class Workload:
    """Texts and their exact token counts for one length spec."""

    spec: LengthSpec
    texts: tuple[str, ...]
    lengths: tuple[int, ...]

    def requests(self, texts_per_request: int) -> list[Request]:
        """Consecutive groups of `texts_per_request` texts, wrapping around so every request is full."""
        if texts_per_request < 1:
            raise WorkloadError("texts per request must be at least 1")
        n = len(self.texts)
        count = max(n // texts_per_request, 1)
        out = []
        for r in range(count):
            rows = [(r * texts_per_request + k) % n for k in range(texts_per_request)]
            out.append(Request(tuple(self.texts[i] for i in rows), sum(self.lengths[i] for i in rows)))
        return out

    @property
    def mean_tokens(self) -> float:
        return sum(self.lengths) / len(self.lengths)


class TextCutter:
    """Cuts windows of a given number of tokens out of the corpus, wrapping around at its end."""

    def __init__(self, tokenizer: Tokenizer, corpus: str = CORPUS) -> None:
        self.tokenizer = tokenizer
        self.special = len(tokenizer.encode("").ids)  # [CLS] + [SEP]
        base = tokenizer.encode(corpus, add_special_tokens=False)
        if not base.ids:
            raise WorkloadError("the corpus gives no tokens with this tokenizer")
        repeats = MAX_TOKENS // len(base.ids) + 2
        self.text = corpus * repeats
        self.offsets = tokenizer.encode(self.text, add_special_tokens=False).offsets
        self.period = len(base.ids)

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    def cut(self, tokens: int, start: int) -> str:
        """A text of exactly `tokens` tokens (special tokens included), starting near corpus token `start`."""
        content = tokens - self.special
        if content < 0:
            raise WorkloadError(f"{tokens} tokens is fewer than the tokenizer's {self.special} special tokens")
        if content == 0:
            return ""
        for shift in range(8):  # a cut inside a word may re-tokenize differently: move the window
            first = (start + shift) % self.period
            last = first + content - 1
            text = self.text[self.offsets[first][0] : self.offsets[last][1]].strip()
            if self.count(text) == tokens:
                return text
        raise WorkloadError(f"could not cut a text of exactly {tokens} tokens from the corpus")


def build_workload(tokenizer: Tokenizer, spec: LengthSpec, count: int, seed: int = 0) -> Workload:
    """`count` texts with lengths drawn from `spec` (seeded), each from a random place in the corpus."""
    if count < 1:
        raise WorkloadError("a workload needs at least one text")
    rng = random.Random(seed)
    cutter = TextCutter(tokenizer)
    lengths = spec.sample(rng, count)
    texts = tuple(cutter.cut(n, rng.randrange(cutter.period)) for n in lengths)
    return Workload(spec=spec, texts=texts, lengths=tuple(lengths))


def load_model_tokenizer(model_dir: Path) -> Tokenizer:
    """The model's fast tokenizer (`tokenizer.json`), without padding or truncation."""
    return load_tokenizer(Path(model_dir))


def perf_analyzer_input(texts: Sequence[str], input_name: str = TEXT) -> dict:
    """perf_analyzer `--input-data`: one entry per text, shape [1] (one batch row); `-b N` takes N in a row."""
    return {"data": [{input_name: {"content": [text], "shape": [1]}} for text in texts]}


def dump_perf_analyzer_input(document: dict) -> str:
    """JSON with one data entry per line: readable, and a changed text is a one-line diff."""
    entries = ",\n".join("  " + json.dumps(entry, ensure_ascii=False) for entry in document["data"])
    return '{"data": [\n' + entries + "\n]}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bge_deploy.bench.workload",
        description="Write benchmark texts of exact token lengths as perf_analyzer --input-data JSON.",
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="model directory with tokenizer.json")
    parser.add_argument("--lengths", default="64", help="tokens incl. [CLS]/[SEP]: N or A-B (uniform)")
    parser.add_argument("--count", type=int, default=200, help="number of texts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        workload = build_workload(
            load_model_tokenizer(args.model_dir), LengthSpec.parse(args.lengths), args.count, args.seed
        )
    except (WorkloadError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump_perf_analyzer_input(perf_analyzer_input(workload.texts)), encoding="utf-8")
    log.info(
        "wrote %d texts of %s tokens (mean %.1f) to %s",
        len(workload.texts),
        workload.spec.label,
        workload.mean_tokens,
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
