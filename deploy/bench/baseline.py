"""The in-process baseline: the same weights in PyTorch, in this process, with the same thread count.

What a user would do without a server: sentence-transformers `encode` (or, without its files, the
PyTorch model with the model's pooling and L2 normalization). Two variants over the same texts:

- `as_requests`: the served run's batches (texts per request), in order, one `encode` call each;
- `offline_sorted`: all those texts sorted by length and cut into batches of `sorted_batch_size`,
  the best case for padding an offline job can have.

Both are bounded in seconds; padding is counted like the server counts it (rows x longest row).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bge_deploy.bench.workload import Request

Encode = Callable[[list[str]], object]


@dataclass(frozen=True)
class BaselineResult:
    """Throughput of one variant; `padding_ratio` = computed / real tokens."""

    variant: str
    batch_size: int
    threads: int
    texts: int
    tokens: int
    elapsed_s: float
    texts_per_s: float
    tokens_per_s: float
    padding_ratio: float


def load_encoder(model_dir: Path, threads: int, max_length: int = 512) -> Encode:
    """A function texts -> unit vectors, on CPU with `threads` intra-op threads."""
    import torch

    torch.set_num_threads(threads)
    if (Path(model_dir) / "modules.json").is_file():
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir), device="cpu")
        model.max_seq_length = max_length

        def encode_st(texts: list[str]) -> object:
            return model.encode(
                texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )

        return encode_st

    from transformers import AutoModel, AutoTokenizer

    from bge_export.onnx_graph import PooledEncoder
    from bge_export.source import read_source

    source = read_source(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    pooled = PooledEncoder(AutoModel.from_pretrained(str(model_dir)).eval(), source.pooling)

    def encode_torch(texts: list[str]) -> object:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            return pooled(**batch).numpy()

    return encode_torch


def computed_tokens(batches: Sequence[Sequence[int]]) -> int:
    """Tokens a padded batch computes: its rows times its longest row."""
    return sum(len(lengths) * max(lengths) for lengths in batches if lengths)


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length, cut into consecutive batches of `batch_size`."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _timed(encode: Encode, batches: Sequence[list[str]], max_seconds: float) -> tuple[int, float]:
    """Encode batches in order until done or `max_seconds` passed (at least one); (batches done, seconds)."""
    start = time.perf_counter()
    done = 0
    for batch in batches:
        encode(batch)
        done += 1
        if time.perf_counter() - start >= max_seconds:
            break
    return done, time.perf_counter() - start


def _result(variant: str, batch_size: int, threads: int, lengths: list[list[int]], elapsed: float) -> BaselineResult:
    texts = sum(len(b) for b in lengths)
    tokens = sum(sum(b) for b in lengths)
    return BaselineResult(
        variant=variant,
        batch_size=batch_size,
        threads=threads,
        texts=texts,
        tokens=tokens,
        elapsed_s=elapsed,
        texts_per_s=texts / elapsed if elapsed > 0 else 0.0,
        tokens_per_s=tokens / elapsed if elapsed > 0 else 0.0,
        padding_ratio=computed_tokens(lengths) / tokens if tokens else 1.0,
    )


def run_baseline(
    encode: Encode,
    requests: Sequence[Request],
    lengths_of: dict[str, int],
    threads: int,
    sorted_batch_size: int,
    max_seconds: float,
) -> tuple[BaselineResult, BaselineResult]:
    """Both variants over the same texts: as the served run batched them, then sorted by length."""
    if not requests:
        raise ValueError("no requests for the baseline")
    encode(list(requests[0].texts))  # warm-up: first-call allocations are not throughput
    batches = [list(r.texts) for r in requests]
    done, elapsed = _timed(encode, batches, max_seconds)
    as_requests = _result(
        "as_requests",
        len(batches[0]),
        threads,
        [[lengths_of[t] for t in b] for b in batches[:done]],
        elapsed,
    )
    texts = [t for b in batches[:done] for t in b]
    order = sorted_batches([lengths_of[t] for t in texts], sorted_batch_size)
    sorted_texts = [[texts[i] for i in idx] for idx in order]
    done_sorted, elapsed_sorted = _timed(encode, sorted_texts, max_seconds)
    offline = _result(
        "offline_sorted",
        sorted_batch_size,
        threads,
        [[lengths_of[t] for t in b] for b in sorted_texts[:done_sorted]],
        elapsed_sorted,
    )
    return as_requests, offline
