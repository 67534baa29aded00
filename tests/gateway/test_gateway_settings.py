"""Unit tests of the gateway's one settings object: defaults, env prefix, CLI flags, redaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import CliApp

from bge_client.gateway.cancellation import cancellation_decision
from bge_client.gateway.settings import GatewaySettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("BGE_GATEWAY_")]:
        monkeypatch.delenv(name)


def test_defaults_serve_the_issue_snippets() -> None:
    settings = GatewaySettings()
    assert (settings.triton_url, settings.model_name, settings.port) == ("localhost:8001", "bge-large-zh-v1.5", 30000)
    assert (settings.host, settings.max_inputs, settings.api_key) == ("0.0.0.0", 2048, None)
    assert settings.public_model_name == "bge-large-zh-v1.5"
    assert settings.query_instruction is None  # the served model's own (its export wrote BGE's instruction)


def test_env_vars_use_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGE_GATEWAY_TRITON_URL", "triton:9001")
    monkeypatch.setenv("BGE_GATEWAY_PORT", "8080")
    monkeypatch.setenv("BGE_GATEWAY_API_KEY", "s3cret")
    monkeypatch.setenv("BGE_GATEWAY_MATRYOSHKA_DIMS", "512,256")
    monkeypatch.setenv("BGE_GATEWAY_LOG_LEVEL", "DEBUG")
    settings = GatewaySettings()
    assert (settings.triton_url, settings.port, settings.log_level) == ("triton:9001", 8080, "debug")
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert settings.matryoshka_dims == [256, 512]


def test_cli_flags_map_onto_the_same_fields_and_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGE_GATEWAY_PORT", "8080")
    settings = CliApp.run(
        GatewaySettings,
        cli_args=[
            "--port",
            "9090",
            "--triton-url",
            "t:1",
            "--served-model-name",
            "alias",
            "--matryoshka-dims",
            "[128, 64]",
            "--max-concurrent-requests",
            "3",
        ],
    )
    assert (settings.port, settings.triton_url, settings.public_model_name) == (9090, "t:1", "alias")
    assert settings.matryoshka_dims == [64, 128] and settings.max_concurrent_requests == 3


def test_secrets_never_appear_in_what_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGE_GATEWAY_API_KEY", "s3cret")
    settings = GatewaySettings()
    assert "s3cret" not in settings.describe() and "s3cret" not in repr(settings)
    assert "api_key=set (redacted)" in settings.describe()
    assert "api_key=none" in GatewaySettings(api_key=None).describe()


@pytest.mark.parametrize(
    "field",
    [
        {"port": 70000},
        {"max_body_bytes": 0},
        {"request_timeout_s": 0},
        {"matryoshka_dims": "0,64"},
        {"log_level": "loud"},
    ],
)
def test_bad_values_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(**field)


@pytest.mark.parametrize(
    ("mode", "version", "cancel"),
    [
        ("auto", "2.51.0", False),  # the nvidia-pytriton 0.7 wheel: server#7368 crash
        ("auto", "2.53.0", True),  # release 24.12, fixed
        ("auto", "3.0.0dev", True),
        ("auto", "", False),  # unknown: assume old
        ("true", "2.51.0", True),
        ("off", "2.60.0", False),
        ("1", "", True),
    ],
)
def test_cancelling_triton_calls_follows_the_server_version(mode: str, version: str, cancel: bool) -> None:
    settings = GatewaySettings(cancel_triton_calls=mode)
    decided, why = cancellation_decision(settings.cancel_triton_calls, version)
    assert decided is cancel and why


def test_cancel_mode_rejects_nonsense() -> None:
    with pytest.raises(ValidationError, match="cancel_triton_calls"):
        GatewaySettings(cancel_triton_calls="sometimes")


def test_the_api_key_comes_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("s3cret\n")
    assert GatewaySettings(api_key_file=key_file).api_key.get_secret_value() == "s3cret"  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="not both"):
        GatewaySettings(api_key="a", api_key_file=key_file)
    with pytest.raises(ValidationError, match="cannot be read"):
        GatewaySettings(api_key_file=tmp_path / "missing")
    (tmp_path / "empty").write_text(" \n")
    with pytest.raises(ValidationError, match="is empty"):
        GatewaySettings(api_key_file=tmp_path / "empty")


@pytest.mark.parametrize("argv", [["--api-key", "s3cret"], ["--api-key=s3cret"]])
def test_a_key_on_the_command_line_is_refused_naming_the_env_var_and_the_file(argv: list[str]) -> None:
    from bge_client.gateway.__main__ import main

    with pytest.raises(SystemExit) as refused:
        main(argv)
    message = str(refused.value.code)
    assert "--api-key is refused" in message and "BGE_GATEWAY_API_KEY" in message and "--api-key-file" in message
    assert "s3cret" not in message
