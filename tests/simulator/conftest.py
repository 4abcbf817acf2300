"""A simulator on a localhost port, and a raw client for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator


class SimClient:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(event).decode())

    async def until(self, event_type: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Events received up to and including the next ``event_type``."""
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                event = orjson.loads(await self.ws.recv())
                self.events.append(event)
                got.append(event)
                if event["type"] == event_type:
                    return got


@pytest.fixture
async def sim_port() -> AsyncIterator[int]:
    runner, port = await start_simulator(SimulatorConfig(speed=100.0, reply_text="Hi there!"))
    yield port
    await runner.cleanup()


@pytest.fixture
async def sim(sim_port: int) -> AsyncIterator[SimClient]:
    url = f"ws://127.0.0.1:{sim_port}/v1/realtime?model=gpt-realtime"
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer k"}, max_size=None) as ws:
        client = SimClient(ws)
        await client.until("session.created")
        yield client
