"""A scripted upstream: a real WebSocket server on localhost that plays a fixed server side.

It records every frame it receives byte for byte, sends ``session.created`` on connect (unless
told otherwise) and answers each received frame with whatever the test scripted. It is the
simplest honest peer for checking what the relay forwards, independent of the simulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

Responder = Callable[["ScriptedConnection", bytes], Awaitable[None]]


def session_created(session_id: str = "sess_SCRIPTED000000000000001") -> bytes:
    return orjson.dumps(
        {
            "type": "session.created",
            "event_id": "event_scripted_created",
            "session": {
                "type": "realtime",
                "object": "realtime.session",
                "id": session_id,
                "model": "gpt-realtime",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "turn_detection": {"type": "server_vad"},
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
                },
            },
        }
    )


@dataclass
class ScriptedConnection:
    ws: web.WebSocketResponse
    request_headers: dict[str, str]
    query: dict[str, str]
    received: list[bytes] = field(default_factory=list)

    async def send(self, data: bytes | dict[str, Any]) -> None:
        raw = data if isinstance(data, bytes) else orjson.dumps(data)
        await self.ws.send_frame(raw, WSMsgType.TEXT)


class ScriptedUpstream:
    """Start with ``await upstream.start()``; ``url`` is the ws:// URL to point the relay at."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        greet: bool = True,
        http_status: int | None = None,
        close_after_greeting: tuple[dict[str, Any], int] | None = None,
    ) -> None:
        self.responder = responder
        self.greet = greet
        self.http_status = http_status
        self.close_after_greeting = close_after_greeting
        self.connections: list[ScriptedConnection] = []
        self.connected = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self) -> ScriptedUpstream:
        await self.server.start_server()
        return self

    async def close(self) -> None:
        # Close the sessions first, as a server going away does: a relay still connected then
        # sees 1001 at once instead of waiting out its close timeout on a server gone deaf.
        # New upgrades (a relay recovering) are refused from here on, or they would hold the
        # server's shutdown until their keepalive gave up.
        self.http_status = 503
        await asyncio.gather(*(c.ws.close(code=1001) for c in self.connections if not c.ws.closed))
        await self.server.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/v1/realtime"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.http_status is not None:
            return web.json_response({"error": "scripted refusal"}, status=self.http_status)
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024, decode_text=False)
        await ws.prepare(request)
        conn = ScriptedConnection(ws, dict(request.headers), dict(request.query))
        self.connections.append(conn)
        self.connected.set()
        if self.greet:
            await conn.send(session_created())
        if self.close_after_greeting is not None:
            event, code = self.close_after_greeting
            await conn.send(event)
            await ws.close(code=code, message=b"scripted close")
            return ws
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                conn.received.append(msg.data)
                if self.responder is not None:
                    await self.responder(conn, msg.data)
        return ws
