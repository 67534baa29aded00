"""One log format for every bge-* program (inside Triton, models log through Triton's own logger instead)."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PROGRAMS = (
    "bge-export",
    "bge-build-engine",
    "bge-triton",
    "bge-stage",
    "bge-serve",
    "bge-gateway",
    "bge-bench",
    "bge-gpu",
)


def configure_logging(level: int | str = logging.INFO) -> None:
    """Call once, in a program's ``main``: our loggers (named for the program, e.g. "bge-triton") at ``level``,
    everything else at WARNING so libraries' chatter stays out of the operator's way."""
    if isinstance(level, str):
        level = level.upper()
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, force=True)
    for name in PROGRAMS:
        logging.getLogger(name).setLevel(level)
