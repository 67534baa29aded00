"""``bge-triton``: which tritonserver, plain-words start-up, restricted admin APIs, clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import loopback_server_options

from bge_deploy.serving import admin_key
from bge_deploy.serving.admin_key import ADMIN_KEY_ENV
from bge_deploy.serving.argv_secret import PLACEHOLDER, VARIABLE, helper_library
from bge_deploy.serving.install import TRITON_HOME_ENV, LauncherError, SystemTriton, TritonDistribution, find_triton
from bge_deploy.serving.launched import LaunchedTriton
from bge_deploy.serving.launcher import TritonSettings
from bge_deploy.serving.process import proc_cmdline
from bge_deploy.serving.stubs import StubProcess
from bge_deploy.serving.triton import ServerOptions, TritonServer

ADMIN_KEY = "s3cret"


def _status(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(
        url, method=method, headers=headers or {}, data=b"{}" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class Launched:
    """A running ``bge-triton`` and what it printed up to "ready"."""

    server: LaunchedTriton
    output: str

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.server.popen is not None
        return self.server.popen

    @property
    def http_port(self) -> int:
        return self.server.http_port

    @property
    def grpc_port(self) -> int:
        return self.server.grpc_port

    @property
    def base(self) -> str:
        return self.server.http_url

    def stop(self) -> str:
        """SIGTERM, as the kubelet sends it; the rest of the output."""
        seen = len(self.server.lines)
        self.server.stop(30)
        return "\n".join(line for _, line in self.server.lines[seen:])


@contextmanager
def launched(repository: Path, **env: str) -> Iterator[Launched]:
    """``bge-triton`` serving ``repository`` on free loopback ports, with a minimal environment plus ``env``."""
    full_env = {"BGE_TRITON_ADMIN_KEY": ADMIN_KEY, "PATH": os.environ["PATH"], **env}
    server = LaunchedTriton(repository, "--exit-timeout", "5", env=full_env).start()
    try:
        server.wait_ready(120)
        yield Launched(server, server.log())
    finally:
        server.kill()


def test_launcher_reports_models_restricts_admin_and_stops_cleanly(triton) -> None:
    with launched(triton.repository) as server:
        output = server.output
        assert f"ready - HTTP 127.0.0.1:{server.http_port}, gRPC 127.0.0.1:{server.grpc_port}" in output, output
        assert f"model '{triton.minilm.name}' loaded and ready" in output
        assert _status(f"{server.base}/v2/models/{triton.minilm.name}/ready") == 200
        assert _status(f"{server.base}/v2/repository/index", "POST") == 403  # model control is admin-only
        assert _status(f"{server.base}/v2/repository/index", "POST", {"triton-admin-key": ADMIN_KEY}) == 200
        rest = server.stop()
    assert server.proc.returncode == 0, rest
    assert "SIGTERM received, draining" in rest and "tritonserver stopped" in rest
    log = re.search(r"Triton's own log goes to (\S+)", output)
    assert log is not None, output
    assert not Path(log.group(1)).parent.exists(), "a clean stop removes the launcher's scratch folder"
    assert "log is kept" not in rest


def test_a_given_workdir_is_never_removed(tmp_path: Path) -> None:
    server = TritonServer(ServerOptions(model_repository=tmp_path), workdir=tmp_path / "mine")
    (tmp_path / "mine").mkdir()
    assert not server.remove_workdir() and (tmp_path / "mine").is_dir()


def test_launcher_serves_from_a_system_install(triton, tmp_path: Path) -> None:
    """NVIDIA's layout (``<home>/bin/tritonserver``, ``<home>/backends/python/``) built from the wheel's pieces.

    The launcher runs it as it is: its backends folder, no library path of its own. The wheel's shared
    libraries are given here through LD_LIBRARY_PATH, as NVIDIA's image sets its own.
    """
    wheel = TritonDistribution.find()
    home = tmp_path / "tritonserver"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "tritonserver").symlink_to(wheel.binary)
    wheel.backend_directory(home / "backends")  # backends/python/{libtriton_python.so, utils, stub}
    model = triton.minilm.name
    with launched(triton.repository, **{TRITON_HOME_ENV: str(home), "LD_LIBRARY_PATH": str(wheel.libs)}) as server:
        assert (
            f"using tritonserver {home}/bin/tritonserver (system install, --home / {TRITON_HOME_ENV})" in server.output
        )
        assert f"model '{model}' loaded and ready" in server.output, server.output
        body = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["你好，世界"]}]}
        request = urllib.request.Request(f"{server.base}/v2/models/{model}/infer", data=json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            outputs = {out["name"]: out for out in json.load(response)["outputs"]}
        assert outputs["embedding"]["shape"] == [1, triton.minilm.dim]
        rest = server.stop()
    assert server.proc.returncode == 0, rest


def _fake_install(home: Path) -> Path:
    """A folder shaped like NVIDIA's /opt/tritonserver whose ``tritonserver`` records its arguments and env."""
    (home / "bin").mkdir(parents=True)
    (home / "backends" / "python").mkdir(parents=True)
    binary = home / "bin" / "tritonserver"
    binary.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\nenv > "$0.env"\n')
    binary.chmod(0o755)
    return home


def test_find_triton_prefers_the_flag_then_the_env_then_opt(tmp_path: Path) -> None:
    flag, env, opt = (_fake_install(tmp_path / name) for name in ("flag", "env", "opt"))
    environ = {TRITON_HOME_ENV: str(env)}
    assert find_triton(flag, environ, system_home=opt) == SystemTriton(flag, f"--home / {TRITON_HOME_ENV}")
    assert find_triton(None, environ, system_home=opt) == SystemTriton(env, TRITON_HOME_ENV)
    assert find_triton(None, {}, system_home=opt) == SystemTriton(opt, f"found at {opt}")


def test_find_triton_falls_back_to_the_wheel(tmp_path: Path) -> None:
    (tmp_path / "opt" / "backends").mkdir(parents=True)  # no bin/tritonserver: not an install
    install = find_triton(None, {TRITON_HOME_ENV: ""}, system_home=tmp_path / "opt")
    assert isinstance(install, TritonDistribution)
    assert install.library_dirs() == [install.libs]
    assert "nvidia-pytriton wheel" in install.describe()


@pytest.mark.parametrize("missing", ["bin/tritonserver", "backends"])
def test_a_named_install_must_be_complete(tmp_path: Path, missing: str) -> None:
    """A wrong BGE_TRITON_HOME is an error, not a silent fall back to another tritonserver."""
    home = _fake_install(tmp_path / "triton")
    (home / missing).rename(tmp_path / "elsewhere")
    with pytest.raises(LauncherError, match=f"no Triton install at {home}"):
        find_triton(None, {TRITON_HOME_ENV: str(home)}, system_home=tmp_path / "none")
    with pytest.raises(LauncherError, match=r"--home"):
        find_triton(home, {}, system_home=tmp_path / "none")


def test_a_system_install_runs_with_its_own_backends_and_library_path(tmp_path: Path) -> None:
    home = _fake_install(tmp_path / "triton")
    options = ServerOptions(model_repository=tmp_path / "models", triton_home=home)
    server = TritonServer(options, workdir=tmp_path / "work").start()
    assert server.process is not None and server.process.wait(timeout=10) == 0
    args = (home / "bin" / "tritonserver.args").read_text().splitlines()
    lines = (home / "bin" / "tritonserver.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert f"--backend-directory={home}/backends" in args
    assert not (tmp_path / "work" / "backends").exists()  # nothing assembled, unlike for the wheel
    assert env.get("LD_LIBRARY_PATH", "") == os.environ.get("LD_LIBRARY_PATH", "")


def test_triton_home_flag_maps_onto_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRITON_HOME_ENV, raising=False)
    assert TritonSettings.from_cli(["--home", str(tmp_path)]).server_options().triton_home == tmp_path
    assert TritonSettings.from_cli([]).server_options().triton_home is None
    monkeypatch.setenv(TRITON_HOME_ENV, str(tmp_path))  # the same setting, as a variable
    assert TritonSettings.from_cli([]).server_options().triton_home == tmp_path


def test_launcher_refuses_a_missing_triton_home(tmp_path: Path) -> None:
    (tmp_path / "m" / "model").mkdir(parents=True)
    (tmp_path / "m" / "model" / "config.pbtxt").write_text("")
    result = subprocess.run(
        ["bge-triton", "--model-repository", str(tmp_path / "m"), "--home", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "no Triton install at" in result.stderr, result.stderr


def test_launcher_refuses_an_empty_repository(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bge-triton", "--model-repository", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "no model repository" in result.stderr


@pytest.mark.parametrize("flag", ["--no-restrict-admin-apis"])
def test_restriction_can_be_lifted_for_local_debugging(flag: str) -> None:
    options = ServerOptions(model_repository=Path("/models"), restrict_admin_apis=False)
    assert not any("restricted" in arg for arg in options.command(Path("tritonserver"), Path("/b")))
    assert any("restricted" in arg for arg in ServerOptions(Path("/m")).command(Path("t"), Path("/b")))


def test_the_argv_secret_helper_is_built() -> None:
    """Installed with a C compiler (CI's is), the package carries the helper that keeps Triton's admin key off
    its command line; without it bge-triton refuses configured keys (below)."""
    library = helper_library()
    assert library is not None, "the argv_secret helper was not built: install gcc and reinstall (make test)"
    assert library.suffix == ".so" and library.stat().st_size > 0


def test_a_configured_admin_key_goes_to_the_environment_not_the_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ADMIN_KEY_ENV, "key-from-the-secret")
    options = TritonSettings.from_cli(["--model-repository", str(tmp_path)]).server_options()
    restriction = options.admin_restriction()
    assert restriction is not None and restriction.key == "key-from-the-secret"
    argv = options.command(Path("tritonserver"), Path("/b"), restriction)
    assert not any("key-from-the-secret" in arg for arg in argv), argv
    assert sum(arg.endswith(f"triton-admin-key={PLACEHOLDER}") for arg in argv) == 2, argv
    environment = restriction.environment({"LD_PRELOAD": "/opt/libjemalloc.so"})
    assert environment[VARIABLE] == "key-from-the-secret"
    assert environment["LD_PRELOAD"].split(":") == [str(helper_library()), "/opt/libjemalloc.so"]
    # a key file wins over the variable and is read, trimmed, at start-up
    (tmp_path / "key").write_text("key-from-a-file\n")
    from_file = TritonSettings.from_cli(["--admin-key-file", str(tmp_path / "key")]).server_options()
    assert from_file.admin_restriction().key == "key-from-a-file"  # type: ignore[union-attr]
    with pytest.raises(LauncherError, match="cannot read the admin key file"):
        TritonSettings.from_cli(["--admin-key-file", str(tmp_path / "missing")]).server_options()


def test_without_the_helper_only_a_random_key_may_go_on_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_key, "helper_library", lambda: None)
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    restriction = ServerOptions(Path("/m")).admin_restriction()
    assert restriction is not None and restriction.environment({}) == {}
    assert restriction.flag_value().endswith(f"={restriction.key}") and len(restriction.key) == 32
    assert restriction.key != ServerOptions(Path("/m")).admin_restriction().key  # type: ignore[union-attr]
    monkeypatch.setenv(ADMIN_KEY_ENV, "key-from-the-secret")
    with pytest.raises(LauncherError, match=r"no argv_secret helper.*C compiler.*unset BGE_TRITON_ADMIN_KEY"):
        ServerOptions(Path("/m")).admin_restriction()


def test_the_admin_key_reaches_triton_but_no_command_line_or_stub(triton, tmp_path: Path) -> None:
    """A key from a file: the admin APIs take it, tritonserver's command line shows the placeholder, and neither
    the key nor the helper's variables are in any process's command line or in the stubs' environment."""
    key = "file-admin-key-0123456789"
    (tmp_path / "admin-key").write_text(key)
    server = LaunchedTriton(
        triton.repository, "--exit-timeout", "5", "--admin-key-file", str(tmp_path / "admin-key"), env=dict(os.environ)
    ).start()
    try:
        server.wait_ready(120)
        assert f"need the key in {tmp_path / 'admin-key'}" in server.log()
        index = f"{server.http_url}/v2/repository/index"
        assert _status(index, "POST", {"triton-admin-key": key}) == 200
        assert _status(index, "POST", {"triton-admin-key": PLACEHOLDER}) == 403
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
        assert not [pid for pid in pids if key in "\0".join(proc_cmdline(pid))]
        tritonserver = [pid for pid in pids if proc_cmdline(pid)[:1] and proc_cmdline(pid)[0].endswith("tritonserver")]
        ours = [pid for pid in tritonserver if str(triton.repository) in " ".join(proc_cmdline(pid))]
        ours = [pid for pid in ours if f"--http-port={server.http_port}" in proc_cmdline(pid)]
        assert len(ours) == 1 and any(PLACEHOLDER in arg for arg in proc_cmdline(ours[0]))
        stubs = StubProcess.children_of(ours[0])
        assert stubs
        for pid in [ours[0], *(stub.pid for stub in stubs)]:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert key.encode() not in environ, pid
        for stub in stubs:
            names = {entry.split(b"=", 1)[0] for entry in Path(f"/proc/{stub.pid}/environ").read_bytes().split(b"\0")}
            assert not names & {VARIABLE.encode(), b"LD_PRELOAD", ADMIN_KEY_ENV.encode()}, names
    finally:
        server.stop(30)  # SIGTERM: bge-triton stops its tritonserver (a SIGKILL would leave it running)


def test_a_preload_that_did_not_happen_is_refused(triton, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The dynamic loader skips a preload library it cannot open and runs tritonserver anyway, with the
    placeholder as its admin key: the server is then not served."""
    monkeypatch.setattr(admin_key, "helper_library", lambda: tmp_path / "gone" / "_argv_secret.so")
    refused = pytest.raises(LauncherError, match="did not receive its admin key through the argv_secret helper")
    with TritonServer(loopback_server_options(triton.repository), workdir=tmp_path / "work") as server, refused:
        server.wait_ready(timeout_s=120)
