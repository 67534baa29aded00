"""Find the model's files and read how sentence-transformers pools and normalizes it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Pooling(str, Enum):
    CLS = "cls"
    MEAN = "mean"


@dataclass(frozen=True)
class ModelSource:
    """A local model directory plus what its sentence-transformers files say.

    Vectors are always L2-normalized: the service promises unit vectors, so cosine is a dot.
    """

    directory: Path
    pooling: Pooling
    max_length: int
    has_sentence_transformers: bool


def resolve_directory(model: str) -> Path:
    """A local dir as is; a hub id through the local HF cache / download (never at serve time)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or model.startswith((".", "/")):
        raise FileNotFoundError(f"model directory {model} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as exc:  # hub errors are many; all mean "not available here"
        raise FileNotFoundError(
            f"could not get '{model}' from the Hugging Face hub or its cache ({type(exc).__name__}: {exc}). "
            "Download it where the hub is reachable and pass the local directory instead."
        ) from exc


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_source(model: str) -> ModelSource:
    """Pooling from modules.json + the Pooling module's config.

    Without sentence-transformers files the model is treated as BGE-style (CLS + L2),
    which is what ``BAAI/bge-*`` documents; the exporter prints that assumption.
    """
    directory = resolve_directory(model)
    modules = _read_json(directory / "modules.json")
    modules = modules if isinstance(modules, list) else []
    pooling_dir = next((m.get("path", "") for m in modules if m.get("type", "").endswith("Pooling")), None)
    pooling = Pooling.CLS
    if pooling_dir is not None:
        cfg = _read_json(directory / pooling_dir / "config.json")
        if cfg.get("pooling_mode_mean_tokens"):
            pooling = Pooling.MEAN
        elif not cfg.get("pooling_mode_cls_token"):
            modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
            raise ValueError(f"unsupported pooling in {directory / pooling_dir}: {modes} (cls and mean are)")
    st_config = _read_json(directory / "sentence_bert_config.json")
    hf_config = _read_json(directory / "config.json")
    max_length = int(st_config.get("max_seq_length") or hf_config.get("max_position_embeddings", 512))
    return ModelSource(
        directory=directory,
        pooling=pooling,
        max_length=min(max_length, int(hf_config.get("max_position_embeddings", max_length))),
        has_sentence_transformers=bool(modules),
    )
