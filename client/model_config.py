"""What a caller needs from a served model's Triton config, read from Triton instead of kept in copies.

Pure: no tritonclient import, so the gateway keeps a single module that talks to Triton.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bge_model_repository.contract import EMBEDDING
from bge_model_repository.parameters import EnsembleParameters


@dataclass(frozen=True)
class ModelFacts:
    """Rows per request, the embedding size, and (for the ensemble) its token limit and query instruction."""

    max_batch_size: int
    dim: int
    parameters: EnsembleParameters = field(default_factory=EnsembleParameters)


def read_model_facts(answer: dict[str, Any]) -> ModelFacts:
    """Read a `get_model_config` answer (gRPC wraps it in "config"; int64 fields arrive as strings)."""
    config = answer.get("config", answer)
    outputs = {o["name"]: o for o in config.get("output", [])}
    if EMBEDDING not in outputs:
        raise ValueError(f"model '{config.get('name')}' has no '{EMBEDDING}' output; is it the ensemble?")
    values = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    return ModelFacts(
        max_batch_size=max(1, int(config.get("max_batch_size", 1))),
        dim=int(outputs[EMBEDDING]["dims"][-1]),
        parameters=EnsembleParameters.from_config(values, str(config.get("name"))),
    )
