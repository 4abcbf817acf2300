"""Frames cross the relay byte for byte, in both directions, in order."""

from __future__ import annotations

import asyncio
import base64
import os

import orjson
import websockets

from tests.conftest import RelayFactory
from tests.support.scripted_upstream import ScriptedConnection, ScriptedUpstream

UNICODE = 'héllo wörld — 你好 — 🎙️ \u2028 "quoted" \\ back'


def _append(i: int) -> bytes:
    """20 ms of PCM16 at 24 kHz, in the shapes apps send: the relay's shortcut for the compact
    ones (relay.io.lanes) and its full path for the rest must both pass them on untouched."""
    audio = base64.b64encode(os.urandom(960)).decode()
    shapes = [
        {"type": "input_audio_buffer.append", "event_id": f"evt_{i}", "audio": audio},
        {"type": "input_audio_buffer.append", "audio": audio, "event_id": f"evt_{i}"},
        {"type": "input_audio_buffer.append", "audio": audio},
    ]
    if i % 4 == 3:  # Python's json.dumps: spaces after the separators
        return b'{"type": "input_audio_buffer.append", "audio": "' + audio.encode() + b'"}'
    return orjson.dumps(shapes[i % 4])


def _client_frames() -> list[bytes]:
    frames: list[bytes] = [
        orjson.dumps(
            {
                "type": "session.update",
                "session": {"type": "realtime", "instructions": UNICODE},
            }
        ),
        # Pretty-printed JSON with odd spacing must arrive exactly as sent.
        b'{ "type" : "conversation.item.create",\n  "item": {"type": "message", "role": "user",'
        b' "content": [{"type": "input_text", "text": ' + orjson.dumps(UNICODE) + b"}]}}",
    ]
    frames += [_append(i) for i in range(200)]
    frames.append(b'{"type":"response.create","event_id":"evt_resp"}')
    return frames


def _server_frames() -> list[bytes]:
    big = base64.b64encode(os.urandom(48_000)).decode()  # a 1 s audio delta, 64 KB of base64
    frames = [
        orjson.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": f"event_{i}",
                "response_id": "resp_1",
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": big,
            }
        )
        for i in range(20)
    ]
    frames.append(
        orjson.dumps(
            {
                "type": "response.output_audio_transcript.delta",
                "event_id": "event_t",
                "delta": UNICODE,
            }
        )
    )
    return frames


async def test_long_mixed_session_is_byte_identical(start_relay: RelayFactory) -> None:
    server_frames = _server_frames()

    async def respond(conn: ScriptedConnection, data: bytes) -> None:
        if data.startswith(b'{"type":"response.create"'):
            for frame in server_frames:
                await conn.send(frame)

    upstream = await ScriptedUpstream(respond).start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    client_frames = _client_frames()
    async with websockets.connect(relay.ws_url, additional_headers=relay.auth, max_size=None) as ws:
        created = await ws.recv(decode=False)
        assert orjson.loads(created)["type"] == "session.created"
        for frame in client_frames:
            await ws.send(frame.decode())
        received = [await asyncio.wait_for(ws.recv(decode=False), 10) for _ in server_frames]
    assert received == server_frames
    for _ in range(100):
        if len(upstream.connections[0].received) == len(client_frames):
            break
        await asyncio.sleep(0.05)
    assert upstream.connections[0].received == client_frames
    await upstream.close()


async def test_binary_frames_are_answered_not_forwarded(start_relay: RelayFactory) -> None:
    upstream = await ScriptedUpstream().start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
        await ws.recv()
        await ws.send(b"\x00\x01binary")
        error = orjson.loads(await ws.recv())
        await ws.send('{"type":"input_audio_buffer.clear"}')
        await asyncio.sleep(0.2)
    assert error["type"] == "error"
    assert error["error"]["code"] == "invalid_event"
    assert error["error"]["message"] == (
        "Expected a text WebSocket message; binary frames are not supported."
    )
    assert upstream.connections[0].received == [b'{"type":"input_audio_buffer.clear"}']
    await upstream.close()


async def test_events_before_session_created_are_held_then_flushed_in_order(
    start_relay: RelayFactory,
) -> None:
    upstream = await ScriptedUpstream(greet=False).start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    frames = [_append(i) for i in range(50)]
    async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
        for frame in frames:
            await ws.send(frame.decode())
        await upstream.connected.wait()
        await asyncio.sleep(0.3)
        conn = upstream.connections[0]
        assert conn.received == []  # nothing reaches an upstream that has no session yet
        from tests.support.scripted_upstream import session_created

        await conn.send(session_created())
        await ws.recv()
        for _ in range(100):
            if len(conn.received) == len(frames):
                break
            await asyncio.sleep(0.05)
    assert conn.received == frames
    await upstream.close()


async def test_an_upstream_frame_that_is_not_json_is_reported_not_fatal(start_relay: RelayFactory) -> None:
    """The API sends only JSON; a broken proxy on the way might not. Such a frame would end the
    conversation (and the app's SDK could not parse it): the app gets an error in the API's shape
    instead, and everything before and after it as sent."""
    broken = [b"<html>Bad Gateway</html>", b'{"type":"response.output_text.delta","delta":"cut']
    after = b'{"type":"response.output_text.delta","event_id":"event_after","delta":"fine"}'

    async def respond(conn: ScriptedConnection, data: bytes) -> None:
        if data.startswith(b'{"type":"response.create"'):
            for frame in broken:
                await conn.send(frame)
            await conn.send(after)

    upstream = await ScriptedUpstream(respond).start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
        await ws.recv()
        await ws.send('{"type":"response.create"}')
        got = [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
        await ws.send('{"type":"input_audio_buffer.clear"}')  # the conversation goes on
        for _ in range(100):
            if b'{"type":"input_audio_buffer.clear"}' in upstream.connections[0].received:
                break
            await asyncio.sleep(0.05)
    assert [(e["type"], e.get("error", {}).get("code")) for e in got[:2]] == [
        ("error", "upstream_invalid_frame")
    ] * 2
    assert got[0]["error"]["type"] == "server_error"
    assert "24-byte message that is not JSON" in got[0]["error"]["message"]
    assert got[2]["event_id"] == "event_after"
    assert upstream.connections[0].received[-1] == b'{"type":"input_audio_buffer.clear"}'
    assert len(upstream.connections) == 1  # the same upstream: nothing was replaced or ended
    await upstream.close()
