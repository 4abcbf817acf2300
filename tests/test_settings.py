"""Settings: TOML < environment < CLI, validated, frozen; the relay refuses to be an open proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from relay.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        "RELAY_CONFIG",
        "RELAY_PORT",
        "RELAY_HOST",
        "RELAY_CLIENT_TOKENS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_precedence_file_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\nport = 9001\nhost = "127.0.0.2"\nallowed_models = ["a", "b"]\n')
    monkeypatch.setenv("RELAY_CONFIG", str(config))
    assert load_settings().port == 9001
    monkeypatch.setenv("RELAY_PORT", "9002")
    settings = load_settings()
    assert (settings.port, settings.host, settings.allowed_models) == (
        9002,
        "127.0.0.2",
        ["a", "b"],
    )
    assert load_settings(port=9003).port == 9003


def test_comma_separated_environment_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_CLIENT_TOKENS", "one, two,three")
    tokens = [t.get_secret_value() for t in load_settings().client_tokens]
    assert tokens == ["one", "two", "three"]


def test_frozen_and_validated() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="port"):
        load_settings(port=70000)
    with pytest.raises(ValidationError, match=r"unknown_setting|Extra inputs"):
        load_settings(unknown_setting=1)


def test_upstream_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().upstream_kind == "simulator"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert load_settings().upstream_kind == "openai"
    with pytest.raises(ValidationError, match="AZURE_OPENAI_ENDPOINT"):
        load_settings(upstream="azure")


def test_open_proxy_is_refused() -> None:
    assert load_settings().startup_problems()  # no auth configured
    assert load_settings(allow_unauthenticated=True).startup_problems() == []
    problems = load_settings(allow_unauthenticated=True, host="0.0.0.0").startup_problems()
    assert problems
    assert "loopback" in problems[0]
    assert load_settings(client_tokens=["t"], host="0.0.0.0").startup_problems() == []
