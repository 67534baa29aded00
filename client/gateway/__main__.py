"""`python -m bge_client.gateway` / `bge-gateway`: settings from flags and env, then uvicorn."""

from __future__ import annotations

import logging
import resource
import sys
from collections.abc import Sequence

import uvicorn
from pydantic_settings import CliApp

from bge_client.gateway.app import create_app
from bge_client.gateway.connections import uvicorn_options
from bge_client.gateway.settings import GatewaySettings
from bge_model_repository.logs import configure_logging

log = logging.getLogger("bge-gateway")


SECRET_FLAGS = ("--api-key",)
"""Flags refused on the command line: every local user can read a process's argv in /proc/<pid>/cmdline."""


def refuse_secret_flags(argv: Sequence[str]) -> None:
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in SECRET_FLAGS:
            raise SystemExit(
                f"bge-gateway: {flag} is refused: a key on the command line is readable by every local user "
                "(/proc/<pid>/cmdline, ps). Set BGE_GATEWAY_API_KEY in the environment or pass "
                "--api-key-file <path> (a mounted Secret)."
            )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags (over `BGE_GATEWAY_*` env vars), say what will be served, and serve it."""
    args = list(sys.argv[1:] if argv is None else argv)
    refuse_secret_flags(args)
    settings = CliApp.run(GatewaySettings, cli_args=args)
    configure_logging(settings.log_level)
    log.info(
        "serving model '%s' from Triton model '%s' at %s (gRPC)",
        settings.public_model_name,
        settings.model_name,
        settings.triton_url,
    )
    log.info(
        "listening on http://%s:%d (OpenAI API under /v1, health at /health, metrics at /metrics)",
        settings.host,
        settings.port,
    )
    log.info("settings: %s", settings.describe())
    open_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if open_files != resource.RLIM_INFINITY and settings.max_connections + 64 > open_files:
        log.warning(
            "max_connections=%d does not fit the open-file limit of %d: raise it (ulimit -n) or lower "
            "BGE_GATEWAY_MAX_CONNECTIONS, or connections past the limit fail with 'Too many open files'",
            settings.max_connections,
            open_files,
        )
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        **uvicorn_options(
            settings.read_timeout_s,
            settings.keep_alive_timeout_s,
            settings.max_header_bytes,
            settings.max_connections,
            early_answer=app.state.admission.early_answer,
        ),
    )


if __name__ == "__main__":
    main()
