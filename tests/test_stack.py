"""``bge-serve``: one command brings up Triton and the gateway; the official openai client gets vectors."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import openai
from support import free_port


def test_serve_starts_triton_and_gateway_then_stops_both(triton, tmp_path: Path) -> None:
    port, http, grpc, metrics = free_port(), free_port(), free_port(), free_port()
    cmd = [
        "bge-serve",
        "--model",
        str(triton.bge.source_dir if triton.bge else triton.minilm.source_dir),
        "--name",
        triton.bge.name if triton.bge else triton.minilm.name,
        "--repository",
        str(triton.repository),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--triton-http-port",
        str(http),
        "--triton-grpc-port",
        str(grpc),
        "--triton-metrics-port",
        str(metrics),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line.rstrip())
            if "ready: OpenAI-compatible API" in line:
                break
        output = "\n".join(lines)
        assert "already has" in output  # the exported repository is reused, not rebuilt
        assert f"Triton ready: HTTP :{http}, gRPC :{grpc}" in output
        assert f"ready: OpenAI-compatible API at http://127.0.0.1:{port}/v1" in output, output
        client = openai.Client(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY")
        model = client.models.list().data[0].id
        response = client.embeddings.create(model=model, input=["今天天气怎么样", "他热爱运动"])
        vectors = np.array([d.embedding for d in response.data])
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, rest
    assert "stopping the gateway, then Triton" in rest and "tritonserver stopped" in rest
