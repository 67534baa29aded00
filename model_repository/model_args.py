"""What Triton hands a Python model's ``initialize``: its config (parsed once) and its version folder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from bge_model_repository.parameters import ConfigParameters

P = TypeVar("P", bound=ConfigParameters)


class ModelArgs:
    def __init__(self, args: Mapping[str, str]) -> None:
        self.config: dict[str, Any] = json.loads(args["model_config"])
        self.name: str = self.config["name"]
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.max_batch_size: int = int(self.config.get("max_batch_size", 0))
        self.values: dict[str, str] = {k: v["string_value"] for k, v in self.config.get("parameters", {}).items()}

    def parameters(self, kind: type[P]) -> P:
        """The config's ``parameters`` as ``kind`` (one of bge_model_repository.parameters)."""
        return kind.from_config(self.values, self.name)

    def path(self, relative: str) -> Path:
        """A file named relative to the model's version folder."""
        return self.version_dir / relative
