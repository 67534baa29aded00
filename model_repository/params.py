"""Read a Triton model's knobs from its own config.pbtxt ``parameters`` (one source of truth)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ModelParams:
    """Typed access to ``parameters { key: "..." value: { string_value: "..." } }``."""

    def __init__(self, args: Mapping[str, str]) -> None:
        self.config: dict[str, Any] = json.loads(args["model_config"])
        self.name: str = self.config["name"]
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.max_batch_size: int = int(self.config.get("max_batch_size", 0))
        self._values = {k: v["string_value"] for k, v in self.config.get("parameters", {}).items()}

    @property
    def values(self) -> dict[str, str]:
        """Every parameter as written (string values)."""
        return dict(self._values)

    def text(self, key: str, default: str | None = None) -> str:
        if key in self._values:
            return self._values[key]
        if default is None:
            raise KeyError(f"model '{self.name}' config.pbtxt lacks parameter '{key}'")
        return default

    def integer(self, key: str, default: int | None = None) -> int:
        return int(self.text(key, None if default is None else str(default)))

    def path(self, key: str) -> Path:
        """A file named relative to the model's version folder."""
        return self.version_dir / self.text(key)
