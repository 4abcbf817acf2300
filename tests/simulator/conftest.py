"""A simulator on a localhost port, and a raw client for it that checks every event it receives.

Every server event a test reads through :class:`SimClient` is validated against the official
``openai`` package's server event union (GA: ``openai.types.realtime``; beta:
``openai.types.beta.realtime``), so all scenarios double as a check of the simulator's shapes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import orjson
import pytest
import websockets
from pydantic import TypeAdapter

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing

AUTH = {"Authorization": "Bearer k"}


@cache
def server_event_adapter(beta: bool) -> TypeAdapter[Any]:
    if beta:
        from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent

        return TypeAdapter(BetaServerEvent)
    from openai.types.realtime import RealtimeServerEvent

    return TypeAdapter(RealtimeServerEvent)


def check_server_event(event: dict[str, Any], *, beta: bool = False) -> None:
    """Raise unless ``event`` parses as the SDK's server event of the same type."""
    parsed = server_event_adapter(beta).validate_python(event)
    assert parsed.type == event["type"], (parsed.type, event["type"])


class SimClient:
    def __init__(self, ws: Any, *, beta: bool = False) -> None:
        self.ws = ws
        self.beta = beta
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(event).decode())

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            event = orjson.loads(await self.ws.recv())
        check_server_event(event, beta=self.beta)
        self.events.append(event)
        return dict(event)

    async def until(self, event_type: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Events received up to and including the next ``event_type``."""
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                got.append(event)
                if event["type"] == event_type:
                    return got

    async def until_count(self, event_type: str, count: int, timeout: float = 15) -> None:
        """Read until ``count`` events of ``event_type`` have arrived in total."""
        while sum(1 for e in self.events if e["type"] == event_type) < count:
            await self.until(event_type, timeout=timeout)


def ws_url(port: int, path: str = "/v1/realtime?model=gpt-realtime") -> str:
    return f"ws://127.0.0.1:{port}{path}"


@pytest.fixture
async def sim_port() -> AsyncIterator[int]:
    runner, port = await start_simulator(
        SimulatorConfig(timing=Timing.fast(), speed=100.0, reply_text="Hi there!")
    )
    yield port
    await runner.cleanup()


@pytest.fixture
async def sim(sim_port: int) -> AsyncIterator[SimClient]:
    async with websockets.connect(ws_url(sim_port), additional_headers=AUTH, max_size=None) as ws:
        client = SimClient(ws)
        await client.until("session.created")
        yield client
