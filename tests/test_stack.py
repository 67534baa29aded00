"""``bge-serve``: one command brings up Triton and the gateway; the official openai client gets vectors."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import openai
from pydantic_settings import CliApp

from bge_deploy.serving.process import children, free_port, proc_cmdline
from bge_deploy.serving.stubs import StubProcess
from bge_deploy.serving.triton import COLOCATED_NICE


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
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ), start_new_session=True
    )
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
        # Triton's unauthenticated ports listen on loopback only (bge-serve's default --triton-host)
        for triton_port in (http, grpc):
            assert listening_addresses(triton_port) == {"127.0.0.1"}, triton_port
        # Triton's processes yield the shared cores to the gateway: the stubs (where the models compute) in every
        # thread, tritonserver itself (Triton sets its model-instance threads to their configured priority, 0)
        server_pid = next(pid for pid in children(proc.pid) if proc_cmdline(pid)[0].endswith("tritonserver"))
        gateway_pid = next(pid for pid in children(proc.pid) if "bge_client.gateway" in " ".join(proc_cmdline(pid)))
        stubs = [stub.pid for stub in StubProcess.children_of(server_pid)]
        assert stubs and {value for pid in stubs for value in thread_nices(pid)} == {COLOCATED_NICE}
        assert thread_nices(server_pid)[0] == COLOCATED_NICE  # the main thread, whose value the others start with
        assert {value for pid in [proc.pid, gateway_pid] for value in thread_nices(pid)} == {0}
        (workdir,) = re.findall(r"starting tritonserver \(log: (\S+)/tritonserver\.log\)", output)
        client = openai.Client(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY")
        model = client.models.list().data[0].id
        response = client.embeddings.create(model=model, input=["今天天气怎么样", "他热爱运动"])
        vectors = np.array([d.embedding for d in response.data])
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed assertion: stop the whole stack (its children hold stdout open)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, rest
    assert "stopping the gateway, then Triton" in rest and "tritonserver stopped" in rest
    assert not Path(workdir).exists()  # its scratch folder (log, backend links) is removed


def thread_nices(pid: int) -> list[int]:
    """The nice value of each thread of `pid`, main thread first (from /proc/<pid>/task/<tid>/stat, field 19)."""
    tasks = sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda task: int(task.name) != pid)
    return [int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]) for task in tasks]


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port`, from /proc/net/tcp (state 0A = LISTEN)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                if table == "tcp":
                    found.add(".".join(str(b) for b in reversed(raw)))
                else:  # four little-endian 32-bit words
                    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                    ip6 = ipaddress.IPv6Address(b"".join(words))
                    found.add(str(ip6.ipv4_mapped or ip6))
    return found


def test_serve_flags_reach_the_export_as_its_own_flags(monkeypatch) -> None:
    """bge-serve's export choices become bge-export flags (read by the export's own settings model), and a
    BGE_SERVE_* variable works like the flag; nothing travels as a variable into the export process."""
    from bge_deploy.serving.stack import ServeSettings
    from bge_export.settings import ExportSettings

    monkeypatch.setenv("BGE_SERVE_INT8_TARGET", "avx2")
    serve = ServeSettings.from_cli(
        ["--model", "/m/bge-small-zh-v1.5", "--precision", "int8", "--cpu-engine", "onnxruntime"]
    )
    command = serve.export_command()
    assert command[1:3] == ["-m", "bge_export"]
    export = CliApp.run(ExportSettings, cli_args=command[3:])
    assert (export.model, export.name, export.output) == ("/m/bge-small-zh-v1.5", "bge-small-zh-v1.5", serve.repository)
    assert (export.precision.value, export.cpu_engine.value, export.int8_target.value) == (
        "int8",
        "onnxruntime",
        "avx2",
    )
    monkeypatch.delenv("BGE_SERVE_INT8_TARGET")
    defaults = CliApp.run(ExportSettings, cli_args=ServeSettings.from_cli([]).export_command()[3:])
    assert defaults.cpu_engine is None and defaults.int8_target is None  # the export decides, as bge-export alone
