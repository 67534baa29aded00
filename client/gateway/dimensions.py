"""`dimensions`: the native size, or a Matryoshka size the model was trained to be cut to."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bge_client.gateway.errors import ErrorKind, GatewayError


def resolve_dimensions(requested: int | None, native: int, matryoshka: Sequence[int]) -> int:
    """Output size for a request: native, or a configured Matryoshka size; anything else is a 400."""
    if requested is None or requested == native:
        return native
    if requested in matryoshka and requested < native:
        return requested
    if matryoshka:
        allowed = ", ".join(str(d) for d in [*matryoshka, native] if d <= native)
        hint = f"this model can return {allowed} dimensions"
    else:
        hint = f"this model only returns its native {native} dimensions (it is not configured as Matryoshka)"
    raise GatewayError(ErrorKind.VALIDATION, f"dimensions={requested} is not supported: {hint}", param="dimensions")


def shorten(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Matryoshka: keep the first `dim` components and L2-normalize again."""
    if dim == vectors.shape[1]:
        return vectors
    cut = vectors[:, :dim]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return (cut / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)
