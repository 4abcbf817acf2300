"""F2: audio sent right after a format-changing session.update waits for session.updated."""

from __future__ import annotations

import asyncio
import base64

import orjson
import websockets

from tests.conftest import RelayFactory
from tests.support.scripted_upstream import ScriptedConnection, ScriptedUpstream

UPDATE = orjson.dumps(
    {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}},
    }
)
ULAW_20MS = orjson.dumps(
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x7f" * 160).decode()}
)


async def test_appends_after_a_format_change_wait_for_session_updated(
    start_relay: RelayFactory,
) -> None:
    answer = asyncio.Event()

    async def slow_update(conn: ScriptedConnection, data: bytes) -> None:
        if data == UPDATE:
            await answer.wait()
            await conn.send(
                {
                    "type": "session.updated",
                    "event_id": "event_u",
                    "session": {
                        "type": "realtime",
                        "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}},
                    },
                }
            )

    upstream = await ScriptedUpstream(slow_update).start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
        await ws.recv()
        await ws.send(UPDATE.decode())
        for _ in range(10):
            await ws.send(ULAW_20MS.decode())
        await ws.send('{"type":"input_audio_buffer.commit"}')
        await asyncio.sleep(0.3)
        conn = upstream.connections[0]
        # Only the update went out; the audio and the commit behind it are held.
        assert conn.received == [UPDATE]
        assert relay.metric("relay_held_events") == 11
        answer.set()
        assert orjson.loads(await ws.recv())["type"] == "session.updated"
        for _ in range(100):
            if len(conn.received) == 12:
                break
            await asyncio.sleep(0.05)
    assert conn.received == [UPDATE] + [ULAW_20MS] * 10 + [b'{"type":"input_audio_buffer.commit"}']
    await upstream.close()
