"""Access: the gateway's API key covers every route but /health, and Triton's admin APIs need the admin key
on HTTP and on gRPC.

tests/gateway/test_gateway_errors.py checks the key on the documented routes; here every route the
app has (docs included), every method and unknown paths are tried. tests/test_launcher.py checks one
restricted HTTP API and tests/deploy the flags in every deployment flavour; here each restricted API is
called without and with the key, over HTTP and over gRPC, on a `bge-triton` of the tests' own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as grpcclient
from gateway.gateway_process import API_KEY, Gateway
from reliability_support import ADMIN_KEY, GatewayFactory, LaunchedTriton, launch_triton
from starlette.routing import Route
from support import TritonHandle as SharedTriton
from tritonclient.utils import InferenceServerException

from bge_client.gateway.app import create_app
from bge_client.gateway.settings import GatewaySettings
from bge_deploy.serving.admin_key import ADMIN_HEADER, GRPC_ADMIN_HEADER, RESTRICTED_APIS
from bge_deploy.serving.argv_secret import PLACEHOLDER
from bge_deploy.serving.process import proc_cmdline

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
UNKNOWN_PATHS = ("/", "/v1", "/v1/nothing", "/health/../metrics", "/v2/models/x/infer", "/%2e%2e/metrics")


def app_paths() -> list[str]:
    """Every path the gateway app serves, read from the app itself (included routers too), so a new route
    cannot be missed."""
    paths: set[str] = set()

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, Route):
                paths.add(route.path)
            router = getattr(route, "original_router", None) or getattr(route, "router", None)
            walk(list(getattr(router, "routes", [])))

    walk(list(create_app(GatewaySettings(api_key=API_KEY)).routes))
    return sorted(paths)


@pytest.fixture(scope="module")
def keyed_gateway(start_gateway_for: GatewayFactory) -> Gateway:
    return start_gateway_for(API_KEY=API_KEY)


def test_every_route_but_health_needs_the_key(keyed_gateway: Gateway) -> None:
    paths = app_paths()
    assert {"/v1/embeddings", "/v1/models", "/metrics", "/health", "/openapi.json", "/docs"} <= set(paths)
    checked = 0
    with httpx.Client(base_url=keyed_gateway.url, timeout=10) as client:
        for path in [*paths, *UNKNOWN_PATHS]:
            for method in METHODS:
                for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": API_KEY}):
                    status = client.request(method, path, headers=headers).status_code
                    if path == "/health":
                        assert status != 401, (method, path, headers)
                    else:
                        assert status == 401, (method, path, headers, status)
                    checked += 1
            if path != "/health":
                with_key = client.get(path, headers={"authorization": f"Bearer {API_KEY}"}).status_code
                assert with_key != 401, path
    print(f"\n{checked} unauthenticated requests over {len(paths)} routes and {len(UNKNOWN_PATHS)} unknown paths")


@pytest.fixture(scope="module")
def admin_triton(tiny_repository: Path) -> Iterator[LaunchedTriton]:
    server = launch_triton(tiny_repository, "--exit-timeout", "5")
    yield server
    server.stop()


HTTP_RESTRICTED: list[tuple[str, str, str]] = [
    # (API, method, path)
    ("model-repository", "POST", "/v2/repository/index"),
    ("model-repository", "POST", "/v2/repository/models/{model}/load"),
    ("model-repository", "POST", "/v2/repository/models/{model}/unload"),
    ("statistics", "GET", "/v2/models/{model}/stats"),
    ("trace", "GET", "/v2/trace/setting"),
    ("logging", "GET", "/v2/logging"),
    ("shared-memory", "GET", "/v2/systemsharedmemory/status"),
    ("shared-memory", "GET", "/v2/cudasharedmemory/status"),
]


def test_triton_admin_http_apis_need_the_key(admin_triton: LaunchedTriton, triton: SharedTriton) -> None:
    with httpx.Client(base_url=admin_triton.http_url, timeout=10) as client:
        for api, method, template in HTTP_RESTRICTED:
            path = template.format(model=triton.model_name)
            kwargs: dict[str, Any] = {"content": b"{}"} if method == "POST" else {}
            for headers in ({}, {ADMIN_HEADER: "wrong"}, {GRPC_ADMIN_HEADER: ADMIN_KEY}):
                refused = client.request(method, path, headers=headers, **kwargs)
                assert refused.status_code == 403, (api, path, headers, refused.status_code)
            if "load" not in path:  # read-only ones; (un)loading is refused anyway in model-control-mode none
                allowed = client.request(method, path, headers={ADMIN_HEADER: ADMIN_KEY}, **kwargs)
                assert allowed.status_code == 200, (api, path, allowed.text)
        # Serving stays open: health, metadata and inference need no key.
        assert client.get(f"/v2/models/{triton.model_name}/ready").status_code == 200
        assert client.get(f"/v2/models/{triton.model_name}").status_code == 200


def grpc_calls(client: grpcclient.InferenceServerClient, model: str) -> list[tuple[str, Callable[..., Any], bool]]:
    """(API, call taking `headers=`, whether to try it with the key): model control, statistics, trace,
    logging and shared memory, as the gRPC client exposes them. (Un)loading is not tried with the key:
    model-control-mode none refuses it anyway."""
    return [
        ("model-repository", client.get_model_repository_index, True),
        ("model-repository", lambda **kw: client.load_model(model, **kw), False),
        ("model-repository", lambda **kw: client.unload_model(model, **kw), False),
        ("statistics", lambda **kw: client.get_inference_statistics(model, **kw), True),
        ("trace", client.get_trace_settings, True),
        ("logging", client.get_log_settings, True),
        ("shared-memory", client.get_system_shared_memory_status, True),
        ("shared-memory", client.get_cuda_shared_memory_status, True),
    ]


def test_triton_admin_grpc_apis_need_the_key(admin_triton: LaunchedTriton, triton: SharedTriton) -> None:
    """Without the `triton-grpc-protocol-triton-admin-key` metadata every admin call is refused, model
    control included; with it the read-only ones answer."""
    with grpcclient.InferenceServerClient(admin_triton.grpc_url) as client:
        for api, call, allowed in grpc_calls(client, triton.model_name):
            for headers in (None, {GRPC_ADMIN_HEADER: "wrong"}, {ADMIN_HEADER: ADMIN_KEY}):
                with pytest.raises(InferenceServerException) as refused:
                    call(headers=headers)
                assert "This protocol is restricted" in str(refused.value.message()), (api, headers)
            if allowed:
                call(headers={GRPC_ADMIN_HEADER: ADMIN_KEY})
        assert client.is_model_ready(triton.model_name)  # health and inference stay open
        assert client.get_model_metadata(triton.model_name).name == triton.model_name


def test_the_gateway_key_from_a_file_is_in_no_command_line(start_gateway_for: GatewayFactory, tmp_path: Path) -> None:
    """A key mounted as a file works and appears in no process's /proc/<pid>/cmdline."""
    key_file = tmp_path / "gateway-key"
    key_file.write_text(f"{API_KEY}-from-file\n")
    gateway = start_gateway_for(API_KEY_FILE=str(key_file))
    url = f"{gateway.url}/v1/models"
    assert httpx.get(url, headers={"authorization": f"Bearer {API_KEY}-from-file"}).status_code == 200
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    readers = [pid for pid in Path("/proc").iterdir() if pid.name.isdigit()]
    exposed = [pid.name for pid in readers if f"{API_KEY}-from-file" in " ".join(proc_cmdline(int(pid.name)))]
    assert exposed == []


def test_the_triton_admin_key_is_in_no_command_line(admin_triton: LaunchedTriton) -> None:
    """The key from BGE_TRITON_ADMIN_KEY (as the Kubernetes Secret sets it) opens the admin APIs (the tests above)
    yet is in no process's /proc/<pid>/cmdline: tritonserver's shows the argv_secret helper's placeholder."""
    pids = [int(pid.name) for pid in Path("/proc").iterdir() if pid.name.isdigit()]
    exposed = [pid for pid in pids if ADMIN_KEY in "\0".join(proc_cmdline(pid))]
    assert exposed == [], [proc_cmdline(pid)[:1] for pid in exposed]
    http_flag = f"--http-port={admin_triton.http_port}"
    server = [pid for pid in pids if proc_cmdline(pid)[:1] and Path(proc_cmdline(pid)[0]).name == "tritonserver"]
    ours = [pid for pid in server if http_flag in proc_cmdline(pid)]
    assert len(ours) == 1
    assert [arg for arg in proc_cmdline(ours[0]) if "restricted" in arg] == [
        f"--http-restricted-api={','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={PLACEHOLDER}",
        f"--grpc-restricted-protocol={','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={PLACEHOLDER}",
    ]
    with httpx.Client(base_url=admin_triton.http_url, timeout=10) as client:
        assert client.get("/v2/logging", headers={ADMIN_HEADER: PLACEHOLDER}).status_code == 403
        assert client.get("/v2/logging", headers={ADMIN_HEADER: ADMIN_KEY}).status_code == 200
