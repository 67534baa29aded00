"""Triton's admin APIs behind a key that never appears on tritonserver's command line.

tritonserver reads the key of ``--http-restricted-api`` / ``--grpc-restricted-protocol`` only from its
flags (triton-inference-server/server#7183), and ``/proc/<pid>/cmdline`` is readable by every user of the
host. With the `argv_secret` helper the flags hold its placeholder and the key travels in the environment;
once the server is ready, `AdminRestriction.check` asks Triton which of the two it holds. Without the
helper (a pip install where no C compiler was) only a random key nobody holds may go on the command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bge_deploy.serving.argv_secret import PLACEHOLDER, helper_library, hidden_secret_environment
from bge_deploy.serving.install import LauncherError
from bge_deploy.serving.process import get_json

RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging", "statistics")
"""Admin APIs that a serving deployment must not expose to clients."""
ADMIN_HEADER = "triton-admin-key"
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
"""Triton prefixes the configured header on gRPC: an admin gRPC call sends this metadata key."""
ADMIN_KEY_ENV = "BGE_TRITON_ADMIN_KEY"
"""Environment variable holding the admin key (from a Secret in Kubernetes); a random key when unset."""
CHECK_PATH = "/v2/models/stats"
"""A restricted endpoint (statistics) called once the server is ready, to see which key it holds."""


@dataclass(frozen=True)
class AdminRestriction:
    """One start's admin key and how it reaches tritonserver."""

    key: str
    helper: Path | None

    def flag_value(self) -> str:
        """The value of both restriction flags: the placeholder, or the key itself where there is no helper."""
        shown = PLACEHOLDER if self.helper is not None else self.key
        return f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={shown}"

    def environment(self, environ: dict[str, str]) -> dict[str, str]:
        """Variables to add to tritonserver's environment (the key and the helper's preload)."""
        if self.helper is None:
            return {}
        return hidden_secret_environment(self.key, self.helper, environ)

    def check(self, http_url: str, log_tail: str = "") -> None:
        """Raise LauncherError unless the admin APIs take the key and refuse the placeholder.

        The dynamic loader skips a preload library it cannot open with one line on stderr and runs the
        program anyway, which would leave the placeholder, a string anyone can read, as the admin key.
        """
        if self.helper is None:
            return
        url = f"{http_url}{CHECK_PATH}"
        with_placeholder, _ = get_json(url, headers={ADMIN_HEADER: PLACEHOLDER})
        with_key, _ = get_json(url, headers={ADMIN_HEADER: self.key})
        if with_placeholder != 403 or with_key != 200:
            raise LauncherError(
                f"tritonserver did not receive its admin key through the argv_secret helper ({self.helper}): "
                f"{CHECK_PATH} answered {with_placeholder} to the placeholder and {with_key} to the key "
                "(expected 403 and 200); not serving admin APIs behind a key readable on its command line\n"
                f"{log_tail}"
            )


def restriction(configured: str | None = None) -> AdminRestriction:
    """The key for one start: `configured`, else $BGE_TRITON_ADMIN_KEY, else a random one nobody holds.

    Raises LauncherError for a configured key that only the command line could carry (no helper).
    """
    key = configured or os.environ.get(ADMIN_KEY_ENV)
    helper = helper_library()
    if key and helper is None:
        raise LauncherError(
            f"an admin key is configured ({ADMIN_KEY_ENV} or --admin-key-file) but this install has no "
            "argv_secret helper (it is built with the package only where a C compiler exists), so the key "
            "would be readable in tritonserver's /proc/<pid>/cmdline: install gcc and reinstall bge-triton, "
            f"or use the project's images; unset {ADMIN_KEY_ENV} to keep the admin APIs closed with a random "
            "key nobody holds"
        )
    return AdminRestriction(key or os.urandom(16).hex(), helper)
