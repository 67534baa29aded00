"""`bge-embed` against a real tritonserver: arguments, stdin lines, JSON lines out, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from client_support import closed_port
from support import TritonHandle as TritonLike

from bge_client.cli import main
from bge_model_repository.contract import QUERY_INSTRUCTION


def test_module_entry_point_embeds_arguments(triton: TritonLike) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bge_client",
            "--url",
            triton.grpc_url,
            "--model",
            triton.model_name,
            "今天天气怎么样",
            "他热爱运动",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1]
    assert records[0]["text"] == "今天天气怎么样" and records[0]["num_tokens"] == 9
    assert all(len(r["embedding"]) == triton.dim for r in records)


def test_stdin_lines_over_http_skip_blank_lines(triton: TritonLike) -> None:
    lines = "\n".join(["我喜欢看电影", "", "这部电影非常精彩", *[f"第{i}行" for i in range(300)]]) + "\n"
    out = io.StringIO()
    code = main(
        ["--protocol", "http", "--url", triton.http_url.removeprefix("http://"), "--model", triton.model_name],
        stdin=io.StringIO(lines),
        stdout=out,
    )
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0 and len(records) == 302  # read in batches of 256, blank line skipped
    assert [r["index"] for r in records] == list(range(302))
    assert records[1]["text"] == "这部电影非常精彩" and records[-1]["text"] == "第299行"


def test_query_flag_prepends_the_instruction(triton: TritonLike) -> None:
    plain, query = io.StringIO(), io.StringIO()
    main(["--url", triton.grpc_url, "--model", triton.model_name, "天气"], stdout=plain)
    main(["--url", triton.grpc_url, "--model", triton.model_name, "--query", "天气"], stdout=query)
    assert json.loads(query.getvalue())["num_tokens"] == json.loads(plain.getvalue())["num_tokens"] + len(
        QUERY_INSTRUCTION
    )


def test_unreachable_server_exits_1_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--url", f"127.0.0.1:{closed_port()}", "x"], stdout=io.StringIO())
    assert code == 1 and "bge-embed: error:" in capsys.readouterr().err
