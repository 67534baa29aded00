"""The tool end to end: random tiny model -> export -> real tritonserver -> load -> results.json."""

from __future__ import annotations

import json
import os
import stat
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT, require_bge_assets

from bge_deploy.bench.random_model import main as random_model_main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 layers, hidden 64: random weights beside the real bge tokenizer and pooling files."""
    assets = require_bge_assets()
    out = tmp_path_factory.mktemp("bench") / "bge-bench-tiny"
    code = random_model_main(
        [
            "--config",
            str(assets),
            "--out",
            str(out),
            "--layers",
            "2",
            "--hidden-size",
            "64",
            "--heads",
            "4",
            "--intermediate-size",
            "128",
        ]
    )
    assert code == 0
    return out


def test_random_model_keeps_the_config_but_the_overridden_shape(tiny_model: Path) -> None:
    source = json.loads((require_bge_assets() / "config.json").read_text())
    built = json.loads((tiny_model / "config.json").read_text())
    assert (built["num_hidden_layers"], built["hidden_size"], built["num_attention_heads"]) == (2, 64, 4)
    for key in ("vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps"):
        assert built[key] == source[key]
    assert (tiny_model / "model.safetensors").is_file() and (tiny_model / "tokenizer.json").is_file()
    pooling = json.loads((tiny_model / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 64 and pooling["pooling_mode_cls_token"]


@pytest.mark.slow
def test_self_contained_run_against_triton(tiny_model: Path, peer: tuple[str, int], tmp_path: Path) -> None:
    """Triton and a peer in one run, two rounds taking turns: the project's table, the side-by-side one with
    the medians and the per-round ratios, the memory of each."""
    out = tmp_path / "results"
    peer_url, peer_port = peer
    command = [
        sys.executable,
        "-m",
        "bge_deploy.bench",
        "--self-contained",
        "--model-dir",
        str(tiny_model),
        "--model-name",
        "bge-bench-tiny",
        "--target",
        "triton",
        "--concurrency",
        "2",
        "--requests",
        "20",
        "--lengths",
        "8-128",
        "--texts-per-request",
        "2",
        "--threads",
        "1",
        "--max-batch-size",
        "16",
        "--pool-size",
        "64",
        "--baseline-seconds",
        "2",
        "--no-progress",
        "--output-dir",
        str(out),
        "--peers",
        f"fake={peer_url}",
        "--rounds",
        "2",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "texts/s" in result.stdout and "p99 ms" in result.stdout
    assert "triton vs fake, 2 rounds taking turns (medians over the rounds" in result.stdout
    assert "served memory after load (largest over the scenarios): RSS MiB triton" in result.stdout

    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert document["meta"]["self_contained"] and document["meta"]["targets"] == ["triton", "fake"]
    assert document["meta"]["rounds"] == 2
    turns = [(s["round"], s["target"]) for s in document["scenarios"]]
    assert turns == [(1, "triton"), (1, "fake"), (2, "fake"), (2, "triton")]
    scenario, peer_scenario, _, second = document["scenarios"]
    assert second["server"]["encoder_texts"] == 40  # each round's counters are its own
    ratios = [second["throughput"]["texts_per_s"] / document["scenarios"][2]["throughput"]["texts_per_s"]]
    ratios.append(scenario["throughput"]["texts_per_s"] / peer_scenario["throughput"]["texts_per_s"])
    row = next(line for line in result.stdout.splitlines() if line.startswith("2 clients x 2 texts"))
    assert row.split()[-2:] == [f"{statistics.median(ratios):.2f}", f"{min(ratios):.2f}-{max(ratios):.2f}"]
    assert (peer_scenario["target"], peer_scenario["throughput"]["errors"]) == ("fake", 0)
    assert peer_scenario["memory"]["ports"] == [peer_port] and peer_scenario["server"] is None
    # tritonserver with its Python-backend stubs (tokenizer and encoder instances; "triton_python_backend_stub")
    names = [p["name"] for p in scenario["memory"]["processes"]]
    assert names.count("tritonserver") == 1 and names.count("triton_python_b") >= 2, names
    assert scenario["memory"]["rss_mib"] > 100 and scenario["memory"]["pss_mib"] <= scenario["memory"]["rss_mib"]
    assert (scenario["target"], scenario["concurrency"], scenario["texts_per_request"]) == ("triton", 2, 2)
    throughput = scenario["throughput"]
    assert throughput["requests"] == 20 and throughput["errors"] == 0
    assert throughput["texts_per_s"] > 0 and throughput["tokens_per_s"] > throughput["texts_per_s"]
    assert 0 < throughput["p50_ms"] <= throughput["p90_ms"] <= throughput["p99_ms"]
    server = scenario["server"]
    assert server["padding_ratio"] >= 1.0
    assert server["encoder_texts"] == 40 and server["real_tokens"] == throughput["tokens"]
    assert server["mean_encoder_batch"] >= 1.0
    assert scenario["notes"] == []  # the server counted exactly the workload's tokens
    baseline = scenario["baseline"]
    assert baseline["as_requests"]["texts_per_s"] > 0 and baseline["offline_sorted"]["texts_per_s"] > 0
    assert baseline["as_requests"]["threads"] == 1
    assert scenario["ratio"] == pytest.approx(throughput["texts_per_s"] / baseline["as_requests"]["texts_per_s"])
    assert scenario["ratio_sorted"] > 0
    assert (out / "throughput.png").read_bytes()[:4] == b"\x89PNG"


def test_without_an_importable_gateway_the_stack_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    from bge_deploy.bench import local_stack

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        local_stack.importlib.util,
        "find_spec",
        lambda name, *a: None if name == local_stack.GATEWAY_MODULE else real_find_spec(name, *a),
    )
    stack = local_stack.LocalStack(local_stack.StackSettings(model_dir=tmp_path, name="m"), root=tmp_path / "stack")
    stack.start_gateway()
    assert stack.gateway_url is None and stack.gateway_process is None
    assert stack.notes == ["gateway not benchmarked: bge_client.gateway is not importable here"]


def test_random_model_copies_are_writable(tiny_model: Path) -> None:
    """The shared assets are read-only; the copies must not be (the pooling config is rewritten)."""
    for path in [tiny_model, *tiny_model.rglob("*")]:
        assert path.stat().st_mode & stat.S_IWUSR, path  # mode bits: os.access says yes to root regardless
