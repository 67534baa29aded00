"""deploy/grafana/bge-triton.json queries series that a running gateway and tritonserver really expose."""

from __future__ import annotations

import json
import re
import urllib.request

import httpx
from gateway_process import SERVED_NAME, Gateway
from support import REPO_ROOT
from support import TritonHandle as TritonLike

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "bge-triton.json"
METRIC = re.compile(r"\b((?:bge|nv)_[a-z0-9_]+)")


def _series(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_panel_queries_series_that_exist(gateway: Gateway, triton: TritonLike) -> None:
    httpx.post(f"{gateway.url}/v1/embeddings", json={"model": SERVED_NAME, "input": ["今天天气怎么样"]}, timeout=30)
    httpx.post(f"{gateway.url}/v1/embeddings", json={"model": SERVED_NAME, "input": ""}, timeout=30)  # an error
    exposed = _series(httpx.get(f"{gateway.url}/metrics").text)
    exposed |= _series(urllib.request.urlopen(triton.metrics_url, timeout=5).read().decode())

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 8
    queried = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, target["expr"]
            queried |= names
    missing = sorted(queried - exposed)
    assert not missing, f"the dashboard queries series nobody exposes: {missing}"
