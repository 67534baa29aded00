"""``bge-triton``: plain-words start-up, restricted admin APIs, clean stop on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support import free_port


def _status(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(
        url, method=method, headers=headers or {}, data=b"{}" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_launcher_reports_models_restricts_admin_and_stops_cleanly(triton, tmp_path: Path) -> None:
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [
        "bge-triton",
        "--model-repository",
        str(triton.repository),
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--exit-timeout",
        "5",
    ]
    env = {"BGE_TRITON_ADMIN_KEY": "s3cret", "PATH": __import__("os").environ["PATH"]}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if "ready - HTTP" in line:
                break
        output = "\n".join(lines)
        assert f"ready - HTTP 127.0.0.1:{http}, gRPC 127.0.0.1:{grpc}" in output, output
        assert f"model '{triton.minilm.name}' loaded and ready" in output
        base = f"http://127.0.0.1:{http}"
        assert _status(f"{base}/v2/models/{triton.minilm.name}/ready") == 200
        assert _status(f"{base}/v2/repository/index", "POST") == 403  # model control is admin-only
        assert _status(f"{base}/v2/repository/index", "POST", {"triton-admin-key": "s3cret"}) == 200
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "SIGTERM received, draining" in rest and "tritonserver stopped" in rest


def test_launcher_refuses_an_empty_repository(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bge-triton", "--model-repository", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "no model repository" in result.stderr


@pytest.mark.parametrize("flag", ["--no-restrict-admin-apis"])
def test_restriction_can_be_lifted_for_local_debugging(flag: str) -> None:
    from bge_deploy.launcher import ServerOptions

    options = ServerOptions(model_repository=Path("/models"), restrict_admin_apis=False)
    assert not any("restricted" in arg for arg in options.command(Path("tritonserver"), Path("/b")))
    assert any("restricted" in arg for arg in ServerOptions(Path("/m")).command(Path("t"), Path("/b")))
