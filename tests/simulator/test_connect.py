"""How clients reach the simulator: every URL form and credential form the real services take."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import websockets

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.simulator.conftest import ws_url

KEY = "sk-sim-key"


@pytest.fixture
async def port() -> AsyncIterator[int]:
    runner, bound = await start_simulator(
        SimulatorConfig(timing=Timing.fast(), interface="azure-ga", api_keys=(KEY,))
    )
    yield bound
    await runner.cleanup()


@pytest.mark.parametrize(
    ("path", "headers", "subprotocols"),
    [
        ("/v1/realtime?model=gpt-realtime", {"Authorization": f"Bearer {KEY}"}, None),
        ("/v1/realtime?model=gpt-realtime", {}, ["realtime", f"openai-insecure-api-key.{KEY}"]),
        ("/openai/v1/realtime?model=my-deployment", {"api-key": KEY}, None),
        (f"/openai/v1/realtime?model=my-deployment&api-key={KEY}", {}, None),
    ],
    ids=["bearer", "subprotocol", "azure-header", "azure-query"],
)
async def test_credential_forms(
    port: int, path: str, headers: dict[str, str], subprotocols: list[str] | None
) -> None:
    async with websockets.connect(
        ws_url(port, path),
        additional_headers=headers,
        subprotocols=subprotocols,  # type: ignore[arg-type]
    ) as ws:
        created = orjson.loads(await ws.recv())
        assert created["type"] == "session.created"
        assert ws.subprotocol == ("realtime" if subprotocols else None)
    expected_model = "my-deployment" if path.startswith("/openai/") else "gpt-realtime"
    assert created["session"]["model"] == expected_model


async def test_a_wrong_key_in_any_form_is_refused_like_the_api(port: int) -> None:
    for headers in ({"api-key": "nope-key"}, {"Authorization": "Bearer nope-key"}):
        async with websockets.connect(
            ws_url(port, "/openai/v1/realtime?model=d"), additional_headers=headers
        ) as ws:
            error = orjson.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        assert (error["error"]["code"], ws.close_code) == ("invalid_api_key", 3000)


async def test_azure_preview_url_speaks_beta(port: int) -> None:
    url = ws_url(port, "/openai/realtime?api-version=2025-04-01-preview&deployment=my-deployment")
    async with websockets.connect(url, additional_headers={"api-key": KEY}) as ws:
        created = orjson.loads(await ws.recv())
        await ws.send('{"type": "session.update", "session": {"modalities": ["text"]}}')
        updated = orjson.loads(await ws.recv())
    assert "modalities" in created["session"]
    assert (updated["type"], updated["session"]["modalities"]) == ("session.updated", ["text"])
