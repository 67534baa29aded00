"""A model directory with random weights of a real model's exact config, tokenizer and pooling files.

    python -m bge_deploy.bench.random_model --config /work/shared/models/bge-large-zh-v1.5 --out DIR

Random weights give meaningless vectors but the exact compute cost and shapes, which is all a
throughput benchmark needs where the real weights cannot be downloaded. The shape flags
(`--layers`, `--hidden-size`, ...) make smaller stand-ins for quick checks; left out, the config is kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from bge_model_repository.logs import configure_logging

log = logging.getLogger("bge-bench")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
"""Where a Hugging Face model directory keeps its weights (never copied from the config directory)."""
POOLING_CONFIG = Path("1_Pooling") / "config.json"


def _copy_contents(source: Path, target: Path) -> None:
    """Copy bytes only: a read-only source (a shared assets folder) must not make the copy read-only."""
    if source.is_dir():
        target.mkdir()
        for child in source.iterdir():
            _copy_contents(child, target / child.name)
    else:
        shutil.copyfile(source, target)


def build_random_model(config_dir: Path, out: Path, seed: int = 0, **overrides: int) -> Path:
    """Write `out`: random BertModel weights of `config_dir`'s config (with `overrides`) + every other file."""
    import torch
    from transformers import AutoConfig, AutoModel

    config_dir, out = Path(config_dir), Path(out)
    if not (config_dir / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {config_dir}")
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(str(config_dir), **{k: v for k, v in overrides.items() if v is not None})
    AutoModel.from_config(config).save_pretrained(str(out))
    for item in config_dir.iterdir():
        if item.name == "config.json" or item.name in WEIGHT_FILES or (out / item.name).exists():
            continue
        _copy_contents(item, out / item.name)
    pooling = out / POOLING_CONFIG
    if pooling.is_file():  # sentence-transformers checks the pooling width against the encoder's
        settings = json.loads(pooling.read_text(encoding="utf-8"))
        settings["word_embedding_dimension"] = config.hidden_size
        pooling.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bge_deploy.bench.random_model",
        description="Random weights of a model's exact config, beside its tokenizer and sentence-transformers files.",
    )
    parser.add_argument("--config", type=Path, required=True, help="model directory with config.json (no weights)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write (must not exist)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, dest="num_hidden_layers", help="override num_hidden_layers")
    parser.add_argument("--hidden-size", type=int, dest="hidden_size", help="override hidden_size")
    parser.add_argument("--heads", type=int, dest="num_attention_heads", help="override num_attention_heads")
    parser.add_argument("--intermediate-size", type=int, dest="intermediate_size", help="override intermediate_size")
    args = parser.parse_args(argv)
    configure_logging()
    if args.out.exists():
        log.error("%s exists; pick a new directory", args.out)
        return 2
    overrides = {
        k: getattr(args, k) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
    }
    try:
        out = build_random_model(args.config, args.out, args.seed, **overrides)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    shape = {k: v for k, v in overrides.items() if v is not None}
    log.info("wrote %s (config of %s%s)", out, args.config, f", with {shape}" if shape else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
