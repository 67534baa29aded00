"""`bge-embed` / `python -m bge_client`: embed texts from arguments or stdin lines, write JSON lines."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO

from tritonclient.utils import InferenceServerException

from bge_client.client import EmbeddingClient
from bge_model_repository.contract import DEFAULT_MODEL, QUERY_INSTRUCTION, Truncate
from bge_model_repository.logs import configure_logging

READ_BATCH = 256
"""Lines read from stdin before a request: big enough to fill batches, small enough to stream."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bge-embed",
        description="Embed texts with the Triton ensemble; one JSON object per line: "
        '{"index", "text", "num_tokens", "embedding"}. Texts come from the arguments, '
        "or one per line from stdin (blank lines skipped).",
    )
    parser.add_argument("texts", nargs="*", help="texts to embed (default: read stdin)")
    parser.add_argument("--url", default=None, help="Triton host:port (default: localhost:8001 gRPC, 8000 HTTP)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Triton ensemble name")
    parser.add_argument(
        "--truncate",
        choices=[t.value for t in Truncate],
        default=Truncate.END.value,
        help="cut over-long texts at the END/START, or NONE to fail on them",
    )
    parser.add_argument(
        "--query", action="store_true", help=f"prepend BGE's retrieval instruction ({QUERY_INSTRUCTION}) to every text"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per Triton call")
    return parser


def _stdin_texts(stream: TextIO) -> Iterator[str]:
    for line in stream:
        text = line.rstrip("\r\n")
        if text.strip():
            yield text


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(texts)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 server/connection error)."""
    args = build_parser().parse_args(argv)
    configure_logging()
    out = stdout or sys.stdout
    source = args.texts or _stdin_texts(stdin or sys.stdin)
    prefix = QUERY_INSTRUCTION if args.query else ""
    index = 0
    try:
        with EmbeddingClient(
            args.url, args.protocol, args.model, timeout_s=args.timeout, truncate=args.truncate
        ) as client:
            for batch in _batches(source, READ_BATCH):
                result = client.embed_with_tokens([prefix + t for t in batch])
                for text, vector, tokens in zip(batch, result.vectors, result.num_tokens, strict=True):
                    record = {"index": index, "text": text, "num_tokens": int(tokens), "embedding": vector.tolist()}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    index += 1
                out.flush()
    except (InferenceServerException, OSError) as exc:
        logging.getLogger("bge-embed").error("error: %s", exc)
        return 1
    return 0
