"""Per-request limits the gateway checks before any Triton call, and how caller values are quoted back."""

from __future__ import annotations

from bge_client.gateway.errors import ErrorKind, GatewayError
from bge_client.gateway.settings import GatewaySettings

MAX_ECHOED_CHARS = 100
"""Caller-sent values are quoted back in errors up to this length: a 1 MB model name is not worth sending back."""


def shown(value: str) -> str:
    return value if len(value) <= MAX_ECHOED_CHARS else f"{value[:MAX_ECHOED_CHARS]}... ({len(value)} characters)"


def check_count(settings: GatewaySettings, count: int) -> None:
    if count > settings.max_inputs:
        raise GatewayError(
            ErrorKind.VALIDATION,
            f"input has {count} items, more than the limit of {settings.max_inputs}",
            param="input",
        )


def check_sizes(settings: GatewaySettings, texts: list[str]) -> None:
    limit = settings.max_input_chars
    for i, text in enumerate(texts):
        if len(text) > limit:
            raise GatewayError(
                ErrorKind.VALIDATION,
                f"input[{i}] has {len(text)} characters, over the limit of {limit}: the model reads only its "
                "first 512 tokens, so split long documents into chunks (operators: BGE_GATEWAY_MAX_INPUT_CHARS)",
                param="input",
            )
