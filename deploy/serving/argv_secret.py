"""A secret on a child's command line without it being readable there: the ``argv_secret`` preload helper.

tritonserver takes its admin key only as a command-line flag, and ``/proc/<pid>/cmdline`` is readable by
every user of the host (or pod). The helper (``argv_secret.c``, built with the package where a C compiler
exists) is preloaded into the child: the command line holds `PLACEHOLDER`, the environment holds the
secret, and before the child's ``main`` runs the helper swaps the secret into the child's own argv, blanks
it in the environment block and removes it, so the child's children inherit nothing.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

PLACEHOLDER = "@BGE_ARGV_SECRET@"
"""Where the secret belongs on the command line; what ``/proc/<pid>/cmdline`` shows instead of it."""
VARIABLE = "BGE_ARGV_SECRET"
PRELOAD_BEFORE = "BGE_ARGV_SECRET_PRELOAD"
"""LD_PRELOAD as it was before the helper was added; the helper restores it for the child's children."""
HELPER_MODULE = "bge_deploy.serving._argv_secret"


def helper_library() -> Path | None:
    """The built helper, or None when the package was installed without a C compiler."""
    spec = importlib.util.find_spec(HELPER_MODULE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin)
    return path if path.is_file() else None


def hidden_secret_environment(secret: str, library: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """What to add to a child's environment so `library` puts `secret` where `PLACEHOLDER` is in its argv."""
    if not secret or PLACEHOLDER in secret:
        raise ValueError("the secret must be non-empty and must not contain the placeholder")
    before = environ.get("LD_PRELOAD", "")
    return {
        VARIABLE: secret,
        PRELOAD_BEFORE: before,
        "LD_PRELOAD": os.pathsep.join(filter(None, [str(library), before])),
    }
