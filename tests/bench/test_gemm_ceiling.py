"""The GEMM ceiling probe: its cost model, and a real (tiny) run of every installed engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bge_deploy.bench.gemm_ceiling import ENGINES, flops_per_token, main, measure


def test_bge_large_costs_about_0_6_gflop_per_token() -> None:
    # 24 x 2 x (4 x 1024^2 + 2 x 1024 x 4096) = 603,979,776 for the projections, + 2 x 24 x 2 x 1024 x 64 attention
    assert flops_per_token(24, 1024, 4096, 0) == 603_979_776
    assert flops_per_token(24, 1024, 4096, 64) == 603_979_776 + 2 * 24 * 2 * 1024 * 64


@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_engine_multiplies_each_shape_at_a_positive_rate(engine: str) -> None:
    results = measure([engine], rows=[8, 32], hidden=64, intermediate=256, threads=1, seconds=0.02)
    assert [(r.rows, r.k, r.n) for r in results] == [
        (m, k, n) for m in (8, 32) for k, n in ((64, 64), (64, 256), (256, 64))
    ]
    assert all(r.engine == engine and np.isfinite(r.gflops) and r.gflops > 0 for r in results)


def test_every_engine_computes_the_same_product() -> None:
    """The probe times the real multiply: each engine's answer is a @ b."""
    generator = np.random.default_rng(1)
    a = generator.standard_normal((16, 64), dtype=np.float32)
    b = generator.standard_normal((64, 32), dtype=np.float32)
    for name, engine in ENGINES.items():
        np.testing.assert_allclose(engine(a, b, 1)(), a @ b, rtol=1e-4, atol=1e-4, err_msg=name)


def test_the_command_reads_the_models_shapes_and_prints_a_row_per_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2})
    )
    assert main(["--config", str(tmp_path), "--rows", "4", "--seconds", "0.01", "--engines", "onnxruntime"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [row[0] for row in rows] == ["4x32x32", "4x32x64", "4x64x32"]
    assert all(row[1] == "onnxruntime" and float(row[2]) > 0 and float(row[3]) > 0 for row in rows)


def test_an_unknown_engine_is_refused_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--engines", "onnxruntime,tensorflow"])
    assert "unknown engine(s) tensorflow; choose from onnxruntime, torch, openvino" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value"), [("--rows", "128,lots"), ("--rows", "0"), ("--threads", "0")])
def test_bad_numbers_are_refused_naming_the_flag(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([flag, value])
    assert flag in capsys.readouterr().err
