"""Whether a request's Triton calls already in flight are cancelled when the request is abandoned."""

from __future__ import annotations

import re

from bge_client.gateway.settings import CancelMode

SAFE_CANCELLATION_VERSION = (2, 53)
"""Triton 2.53 (release 24.12) fixed the SIGSEGV on a gRPC cancellation racing a request's completion
(triton-inference-server/server#7368); older servers crash about once in a few thousand cancellations."""


def cancellation_decision(mode: CancelMode, server_version: str) -> tuple[bool, str]:
    """Whether to cancel in-flight Triton calls of abandoned requests, and why, for the start-up log."""
    if mode is not CancelMode.AUTO:
        return mode is CancelMode.TRUE, f"cancel_triton_calls={mode.value}"
    parts = re.findall(r"\d+", server_version)[:2]
    if len(parts) < 2:
        return False, f"Triton reports no usable version ({server_version!r}); assuming an old one"
    if (int(parts[0]), int(parts[1])) >= SAFE_CANCELLATION_VERSION:
        return True, f"Triton {server_version} cancels safely"
    return False, (
        f"Triton {server_version} < 2.53 can crash on gRPC cancellations (server#7368); their calls finish instead"
    )
