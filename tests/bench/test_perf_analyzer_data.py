"""deploy/perf_analyzer: input-data files perf_analyzer can read, with the token lengths they claim."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support import REPO_ROOT
from tokenizers import Tokenizer

FOLDER = REPO_ROOT / "deploy" / "perf_analyzer"
FILES = {"input_data_64.json": (64, 64), "input_data_mixed.json": (8, 512)}


def texts_of(name: str) -> list[str]:
    raw = (FOLDER / name).read_bytes()
    document = json.loads(raw.decode("utf-8"))  # strict UTF-8: a bad byte fails here
    return [entry["text"]["content"][0] for entry in document["data"]]


@pytest.mark.parametrize("name", FILES)
def test_entries_are_one_text_row_each(name: str) -> None:
    document = json.loads((FOLDER / name).read_bytes().decode("utf-8"))
    assert set(document) == {"data"}
    entries = document["data"]
    assert len(entries) >= 100
    for entry in entries:
        assert set(entry) == {"text"}  # the ensemble's only input (docs/CONTRACT.md)
        tensor = entry["text"]
        assert tensor["shape"] == [1]
        assert isinstance(tensor["content"], list) and len(tensor["content"]) == 1
        assert isinstance(tensor["content"][0], str) and tensor["content"][0].strip()


@pytest.mark.parametrize("name", FILES)
def test_texts_are_chinese(name: str) -> None:
    for text in texts_of(name):
        cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
        assert cjk >= 0.8 * len(text), text


@pytest.mark.parametrize(("name", "bounds"), FILES.items())
def test_token_lengths_with_the_real_tokenizer(name: str, bounds: tuple[int, int], bge_tokenizer: Tokenizer) -> None:
    low, high = bounds
    lengths = [len(e.ids) for e in bge_tokenizer.encode_batch(texts_of(name))]
    assert min(lengths) >= low and max(lengths) <= high
    if low == high:
        assert set(lengths) == {low}
    else:  # a real mix: short queries and full passages both present
        assert min(lengths) < 64 and max(lengths) > 448
    assert all(100 not in e.ids for e in bge_tokenizer.encode_batch(texts_of(name)))  # no [UNK]


def test_run_script_is_executable_valid_bash_and_targets_the_ensemble_over_grpc() -> None:
    script = FOLDER / "run.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text(encoding="utf-8")
    assert 'MODEL="${MODEL:-bge-large-zh-v1.5}"' in text
    assert "-i grpc" in text and "--input-data" in text and "--concurrency-range" in text
    for name in FILES:
        assert name in (FOLDER / "README.md").read_text(encoding="utf-8")


def test_run_script_says_what_is_missing_without_perf_analyzer(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path)}
    result = subprocess.run(["bash", str(FOLDER / "run.sh")], env=env, capture_output=True, text=True)
    if result.returncode == 0:
        pytest.skip("perf_analyzer is installed here")
    assert result.returncode == 2 and "perf_analyzer not found" in result.stderr
