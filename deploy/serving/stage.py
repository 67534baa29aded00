"""``bge-stage``: wait for a published model repository and copy its current version into this pod.

Run as the Triton pod's first init container: the export Job publishes versions on a shared volume
(``bge-export --publish-root``, `bge_model_repository.published`), and each pod serves its own copy
from an emptyDir, so re-exporting never changes the files under a running tritonserver, and a
watchdog restart reloads exactly what the pod started with. A new version reaches pods by a
rollout (``kubectl rollout restart deployment/triton``). Every flag is also a ``BGE_STAGE_<FLAG>``
variable.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from bge_model_repository import published
from bge_model_repository.contract import DEFAULT_MODEL, DEFAULT_REPOSITORY
from bge_model_repository.logs import configure_logging

log = logging.getLogger("bge-stage")


class StageSettings(BaseSettings):
    """bge-stage: copy the current published version of a model repository into the folder Triton serves."""

    model_config = SettingsConfigDict(
        env_prefix="BGE_STAGE_", cli_kebab_case=True, cli_prog_name="bge-stage", cli_implicit_flags=True
    )

    published: Path = Field(description="the publish root bge-export --publish-root writes (a shared volume)")
    to: Path = Field(DEFAULT_REPOSITORY, description="the model repository Triton will serve (the pod's own volume)")
    model: str = Field(DEFAULT_MODEL, description="the served model the version must hold")
    wait_s: float = Field(0.0, ge=0.0, description="seconds to wait for a first publish (0: for ever)")
    poll_s: float = Field(10.0, gt=0.0, description="seconds between looks while waiting")


class StageError(RuntimeError):
    """Why nothing servable was staged."""


def _size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def wait_for_version(settings: StageSettings) -> published.Version:
    deadline = time.monotonic() + settings.wait_s if settings.wait_s else None
    while True:
        try:
            return published.current(settings.published)
        except published.NotPublishedError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise StageError(f"{exc} after waiting {settings.wait_s:g} s; has the bge-export Job run?") from None
            log.info("waiting for the bge-export Job to publish a model repository: %s", exc)
        time.sleep(settings.poll_s)


def stage(settings: StageSettings) -> published.Version:
    wait_for_version(settings)
    started = time.monotonic()
    # The version copied, which a publish since the wait may have made newer than the one waited for.
    version = published.copy_current(settings.published, settings.to)
    models = ", ".join(sorted(p.name for p in settings.to.iterdir())) or "nothing"
    if not (settings.to / settings.model / "config.pbtxt").is_file():
        raise StageError(f"published version {version.name} holds no model '{settings.model}' (it holds {models})")
    log.info(
        "staged version %s of %s into %s: %s (%.0f MiB in %.1f s)",
        version.name,
        settings.published,
        settings.to,
        models,
        _size_mib(settings.to),
        time.monotonic() - started,
    )
    return version


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    settings = CliApp.run(StageSettings, cli_args=list(sys.argv[1:] if argv is None else argv))
    try:
        stage(settings)
    except (StageError, published.NotPublishedError, OSError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
