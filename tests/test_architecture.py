"""The rooms of docs/ARCHITECTURE.md and who may import whom, checked over every module (imports inside
functions included), so the layering stays true as the code grows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from support import REPO_ROOT

PACKAGES = {
    "model_repository": "bge_model_repository",
    "export": "bge_export",
    "client": "bge_client",
    "deploy": "bge_deploy",
}
# Each room and the rooms it may import (besides itself). Lower rooms come first; nothing imports upwards.
MAY_IMPORT: dict[str, set[str]] = {
    "bge_model_repository": set(),
    "bge_export": {"bge_model_repository"},
    "bge_client": {"bge_model_repository"},
    "bge_client.gateway": {"bge_model_repository", "bge_client"},
    "bge_deploy": set(),  # the package itself holds only its rooms (and the YAML, Dockerfiles beside them)
    "bge_deploy.serving": {"bge_model_repository", "bge_export", "bge_client"},
    "bge_deploy.bench": {"bge_model_repository", "bge_export", "bge_client", "bge_deploy.serving"},
    "bge_deploy.gpu": {"bge_model_repository", "bge_export", "bge_client", "bge_deploy.serving", "bge_deploy.bench"},
}
ONLY_TRITONCLIENT_IMPORTER_IN_THE_GATEWAY = "bge_client.gateway.triton_backend"
# Inside the gateway: the service and the layer below it never reach the HTTP surface or tritonclient.
GATEWAY_LOWER = {
    "bge_client.gateway.inference": {"bge_client.gateway.errors"},
    "bge_client.gateway.token_ids": {"bge_client.gateway.errors", "bge_client.gateway.inference"},
    "bge_client.gateway.fair_share": {"bge_client.gateway.inference"},
    "bge_client.gateway.calls": {
        "bge_client.gateway.errors",
        "bge_client.gateway.fair_share",
        "bge_client.gateway.inference",
        "bge_client.gateway.metrics",
    },
    "bge_client.gateway.service": {
        "bge_client.gateway.calls",
        "bge_client.gateway.cancellation",
        "bge_client.gateway.dimensions",
        "bge_client.gateway.errors",
        "bge_client.gateway.fair_share",
        "bge_client.gateway.inference",
        "bge_client.gateway.limits",
        "bge_client.gateway.metrics",
        "bge_client.gateway.protocol",
        "bge_client.gateway.settings",
        "bge_client.gateway.tei_protocol",
        "bge_client.gateway.token_ids",
    },
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (REPO_ROOT / folder).rglob("*.py"):
            parts = path.relative_to(REPO_ROOT / folder).with_suffix("").parts
            found[".".join([package, *parts]).removesuffix(".__init__")] = path
    return found


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _room(module: str) -> str:
    """The most specific room a module belongs to."""
    return max((room for room in MAY_IMPORT if module == room or module.startswith(room + ".")), key=len)


MODULES = _modules()


def test_every_module_is_in_a_room() -> None:
    assert len(MODULES) > 50
    assert {_room(m) for m in MODULES} == set(MAY_IMPORT)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module: str) -> None:
    room = _room(module)
    allowed = MAY_IMPORT[room] | {room}
    for target in _imports(MODULES[module]):
        if not target.startswith("bge_"):
            continue
        target_room = _room(target)
        assert target_room in allowed or target_room.startswith(room + "."), (
            f"{module} imports {target}: {room} may import only {sorted(allowed)}"
        )


def test_the_gateway_talks_to_triton_through_one_module() -> None:
    importers = {
        module
        for module, path in MODULES.items()
        if module.startswith("bge_client.gateway") and any(t.startswith("tritonclient") for t in _imports(path))
    }
    assert importers == {ONLY_TRITONCLIENT_IMPORTER_IN_THE_GATEWAY}


@pytest.mark.parametrize("module", sorted(GATEWAY_LOWER))
def test_the_service_and_the_layer_below_it_import_nothing_above(module: str) -> None:
    ours = {t for t in _imports(MODULES[module]) if t.startswith("bge_client.gateway")}
    assert ours <= GATEWAY_LOWER[module], ours - GATEWAY_LOWER[module]


def test_runtime_models_import_only_the_model_repository_layer() -> None:
    """What runs inside Triton (model.py and what it imports) must not need the export's or client's stacks."""
    for role in ("tokenizer", "encoder"):
        imported = {t for t in _imports(REPO_ROOT / "model_repository" / role / "model.py") if t.startswith("bge_")}
        assert imported and all(t.startswith("bge_model_repository.") for t in imported), imported


MAX_LINES = 350
SIZE_REASON = "Long because"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small_or_say_why(module: str) -> None:
    """One job per module: over MAX_LINES a module's docstring says why it is one piece."""
    source = MODULES[module].read_text(encoding="utf-8")
    if source.count("\n") > MAX_LINES:
        docstring = ast.get_docstring(ast.parse(source)) or ""
        assert SIZE_REASON in docstring, f"{module} has {source.count(chr(10))} lines: split it or say why"


def test_the_change_table_names_files_that_exist() -> None:
    """docs/ARCHITECTURE.md's "where to make a change" sends a newcomer to real files."""
    text = (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    table = text[text.index("## Where to make a change") :]
    paths = [p for p in re.findall(r"`([\w./-]+\.(?:py|yaml))`", table)]
    assert len(paths) >= 5
    for path in paths:
        assert (REPO_ROOT / path).is_file(), path
