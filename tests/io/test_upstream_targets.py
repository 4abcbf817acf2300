"""Where the relay connects for each provider, with which credentials (no network needed)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from relay.core.protocol import Interface
from relay.io.entra import EntraTokenProvider
from relay.io.upstream import UpstreamConfig
from relay.settings import load_settings


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "RELAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)


async def test_openai_target() -> None:
    settings = load_settings(openai_api_key="sk-test", openai_organization="org-1", openai_project="proj_1")
    target = await UpstreamConfig(settings).target("gpt-realtime", "relay_1")
    assert str(target.url) == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert target.headers["Authorization"] == "Bearer sk-test"
    assert target.headers["OpenAI-Organization"] == "org-1"
    assert target.headers["OpenAI-Project"] == "proj_1"
    assert "OpenAI-Beta" not in target.headers
    assert "sk-test" not in repr(target)


async def test_azure_ga_target_maps_models_to_deployments() -> None:
    settings = load_settings(
        azure_openai_endpoint="https://res.openai.azure.com",
        azure_openai_api_key="az-key",
        azure_deployments={"gpt-realtime": "prod-realtime"},
    )
    config = UpstreamConfig(settings)
    target = await config.target("gpt-realtime", "relay_1")
    assert str(target.url) == "wss://res.openai.azure.com/openai/v1/realtime?model=prod-realtime"
    assert target.headers["api-key"] == "az-key"
    assert config.interface is Interface.GA


async def test_azure_preview_target_speaks_beta() -> None:
    settings = load_settings(
        azure_openai_endpoint="https://res.openai.azure.com",
        azure_openai_api_key="k",
        azure_openai_deployment="dep",
        azure_api_version="2025-04-01-preview",
    )
    config = UpstreamConfig(settings)
    target = await config.target("gpt-4o-realtime-preview", "relay_1")
    assert target.url.path == "/openai/realtime"
    assert dict(target.url.query) == {"api-version": "2025-04-01-preview", "deployment": "dep"}
    assert target.headers["OpenAI-Beta"] == "realtime=v1"
    assert config.interface is Interface.BETA


class _Credential:
    """Stands in for azure-identity's credential (an external service), counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_token(self, scope: str) -> Any:
        self.calls += 1
        token = type("Token", (), {"token": f"entra-{self.calls}", "expires_on": time.time() + 3600})
        return token


async def test_entra_tokens_are_cached_and_shared() -> None:
    credential = _Credential()
    provider = EntraTokenProvider(credential)
    tokens = await asyncio.gather(*(provider.token() for _ in range(10)))
    assert set(tokens) == {"entra-1"}
    assert credential.calls == 1
    settings = load_settings(
        azure_openai_endpoint="https://res.openai.azure.com", azure_use_entra_id=True, upstream="azure"
    )
    target = await UpstreamConfig(settings, token_provider=provider.token).target("m", "r")
    assert target.headers["Authorization"] == "Bearer entra-1"


@pytest.mark.parametrize(
    ("model", "query"),
    [
        (None, {"intent": "transcription"}),
        ("gpt-realtime-whisper", {"intent": "transcription", "deployment": "captions"}),
    ],
    ids=["no-deployment", "mapped-deployment"],
)
async def test_transcription_targets_carry_the_intent(model: str | None, query: dict[str, str]) -> None:
    """?intent=transcription on OpenAI goes without a model; on Azure with the deployment (F3's
    URL: /openai/v1/realtime?deployment=...&intent=transcription)."""
    openai = await UpstreamConfig(load_settings(openai_api_key="sk-test")).target(
        None, "relay_1", intent="transcription"
    )
    assert dict(openai.url.query) == {"intent": "transcription"}
    settings = load_settings(
        azure_openai_endpoint="https://res.openai.azure.com",
        azure_openai_api_key="az-key",
        azure_deployments={"gpt-realtime-whisper": "captions"},
    )
    azure = await UpstreamConfig(settings).target(model, "relay_1", intent="transcription")
    assert azure.url.path == "/openai/v1/realtime"
    assert dict(azure.url.query) == query


async def test_a_calls_control_socket_names_only_the_call() -> None:
    openai = await UpstreamConfig(load_settings(openai_api_key="sk-test")).target(
        None, "relay_1", call_id="rtc_abc"
    )
    assert str(openai.url) == "wss://api.openai.com/v1/realtime?call_id=rtc_abc"
    settings = load_settings(azure_openai_endpoint="https://res.openai.azure.com", azure_openai_api_key="k")
    azure = await UpstreamConfig(settings).target(None, "relay_1", call_id="rtc_abc")
    assert str(azure.url) == "wss://res.openai.azure.com/openai/v1/realtime?call_id=rtc_abc"
