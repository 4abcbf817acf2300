"""One upstream WebSocket connection and what the relay knows about it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType

from relay.io.upstream import UpstreamTarget


@dataclass(eq=False)
class UpstreamLink:
    """An open upstream session. The relay session may replace it several times in its life."""

    ws: aiohttp.ClientWebSocketResponse[bool]
    target: UpstreamTarget
    opened_at: float
    session_id: str | None = None
    last_error_code: str | None = None
    closed_by_relay: bool = False
    created: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, data: bytes) -> None:
        await self.ws.send_frame(data, WSMsgType.TEXT)

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        self.closed_by_relay = True
        if not self.ws.closed:
            await self.ws.close(code=code, message=message)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        transport = getattr(getattr(self.ws, "_writer", None), "transport", None)
        if transport is not None:
            transport.set_write_buffer_limits(high=high, low=low)
