"""Shared fixtures: a real relay on a localhost port, in front of a real upstream server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from relay.app import create_app
from relay.settings import Settings, load_settings

TOKEN = "relay-test-token-0123456789"


@dataclass
class RelayHandle:
    server: TestServer
    app: web.Application
    settings: Settings
    registry: CollectorRegistry
    token: str = TOKEN

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/v1/realtime"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


RelayFactory = Callable[..., Awaitable[RelayHandle]]


def in_process_settings(**overrides: Any) -> Settings:
    """Settings of a relay served in the test's own process: the test token, loopback, and the
    keyword overrides. Such a relay shares its event loop with the test's clients and upstreams,
    whose own work (150 handshakes at once, a hostile 8 MiB frame) would read as the relay's lag:
    admission control is off, and tested on its own (tests/io/test_overload.py)."""
    overrides.setdefault("client_tokens", [TOKEN])
    overrides.setdefault("host", "127.0.0.1")
    overrides.setdefault("ping_interval_s", 20.0)
    overrides.setdefault("overload_lag_ms", 0.0)
    return load_settings(**overrides)


@pytest.fixture
async def start_relay(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RelayFactory]:
    """Start relays on ephemeral ports; settings come from keyword overrides only."""
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "RELAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    servers: list[TestServer] = []

    async def start(**overrides: Any) -> RelayHandle:
        settings = in_process_settings(**overrides)
        registry = CollectorRegistry()
        app = create_app(settings, registry)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return RelayHandle(server, app, settings, registry)

    yield start
    for server in reversed(servers):
        await server.close()
