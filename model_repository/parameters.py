"""Each model's ``config.pbtxt`` ``parameters``, typed: the export writes them, the model reads them.

A field's name is its key, so a key is written once. Triton stores every value as a string;
``to_config`` and ``from_config`` convert, and a missing required key is an error naming the model.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from bge_model_repository.contract import MAX_INPUT_TOKENS

P = TypeVar("P", bound="ConfigParameters")


def _convert(kind: Any, text: str) -> Any:
    if kind is bool:
        return text.strip().lower() in ("1", "true", "yes")
    if kind in (int, float, str):
        return kind(text)
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if len(args) == 1:  # X | None
        return _convert(args[0], text)
    raise TypeError(f"no conversion for {kind}")


@dataclasses.dataclass(frozen=True)
class ConfigParameters:
    def to_config(self) -> dict[str, str]:
        """Non-None fields as Triton's string values (bools as 0/1)."""
        values = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                values[field.name] = str(int(value)) if isinstance(value, bool) else str(value)
        return values

    @classmethod
    def from_config(cls: type[P], values: Mapping[str, str], model: str = "this model") -> P:
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name in values:
                kwargs[field.name] = _convert(hints[field.name], values[field.name])
            elif field.default is dataclasses.MISSING:
                raise KeyError(f"model '{model}' config.pbtxt lacks parameter '{field.name}'")
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class TokenizerParameters(ConfigParameters):
    tokenizer_dir: str
    max_length: int = MAX_INPUT_TOKENS
    pad_to_multiple_of: int = 1
    """The GPU backends batch only equal shapes: coarser buckets merge more requests."""


@dataclasses.dataclass(frozen=True)
class SelfCheckParameters(ConfigParameters):
    """What the serving side needs to re-check the stored references (every encoder backend has these)."""

    precision: str = "fp32"
    self_check_file: str | None = None
    """None: the export stored no references (``--no-parity``)."""
    self_check_min_cosine: float | None = None
    int8_target: str | None = None
    """The CPU an int8 encoder was made for."""


@dataclasses.dataclass(frozen=True)
class CpuEncoderParameters(ConfigParameters):
    """The Python-backend (CPU) encoder's knobs."""

    onnx_file: str
    vocab_size: int
    max_batch_tokens: int
    engine: str = "onnxruntime"
    intra_op_threads: int = 0
    """Threads per lane; 0: the serving machine's cores / instance_count / lanes."""
    lanes: int = 0
    """Sub-batches one instance runs at once on one copy of the weights; 0: chosen from the serving
    machine's cores (``encoder_runtime.default_parallelism``)."""
    instance_count: int = 1
    intra_op_spinning: bool = False
    max_length: int = MAX_INPUT_TOKENS
    pad_to_multiple_of: int = 8
    type_vocab_size: int = 2  # segment ids the model has (BERT: 2)


@dataclasses.dataclass(frozen=True)
class EnsembleParameters(ConfigParameters):
    """What a caller of the ensemble (the gateway) reads instead of keeping its own copies."""

    max_length: int = MAX_INPUT_TOKENS
    query_instruction: str = ""
    # What the model's own token-id rows look like (`tokenization.SpecialIds`); None where the export
    # predates them or the tokenizer adds no such token.
    vocab_size: int | None = None
    cls_token_id: int | None = None
    sep_token_id: int | None = None
    # what the encoder computes, for /info (None where the export predates them)
    precision: str | None = None
    pooling: str | None = None
