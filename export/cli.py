"""``bge-export``: flags and BGE_EXPORT_* variables -> ExportSettings -> run_export."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence

from pydantic_settings import CliApp

from bge_export.parity import ParityError
from bge_export.settings import ExportSettings
from bge_model_repository.logs import configure_logging


def _quiet_libraries() -> None:
    """Our log says what happens; the libraries' progress bars and tracer warnings drown it."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.simplefilter("ignore")  # tracer and deprecation chatter; failures still raise


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    _quiet_libraries()
    settings = CliApp.run(ExportSettings, cli_args=list(sys.argv[1:] if argv is None else argv))
    from bge_export.pipeline import publish_export
    from bge_export.tensorrt_engine import EngineBuildError

    try:
        publish_export(settings)
    except ParityError as exc:
        logging.getLogger("bge-export").error("%s", exc)
        return 3
    except (FileNotFoundError, ValueError, EngineBuildError) as exc:
        logging.getLogger("bge-export").error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
