"""The relay's own WebSocket layer at its edges: bad upgrades, protocol violations, fragments,
pings, the close handshake, and a TLS upstream.

A raw socket plays the misbehaving client (no library would send these frames); the upstream is
the scripted aiohttp server or the simulator, so both ends are independent implementations.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import websockets
from websockets.speedups import apply_mask
from yarl import URL

from relay.core.websocket import accept_key, close_payload, encode_frame
from relay.io.frame_path import MAX_EARLY_MESSAGES
from relay.io.websocket import WebSocketConnection, connect
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from tests.conftest import RelayFactory, RelayHandle
from tests.support.raw_frames import client_frame
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.tls import self_signed


class RawClient:
    """A WebSocket client written by hand, to send what real clients never would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, relay: RelayHandle, extra: dict[str, str] | None = None) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.server.port)
        headers = {
            "Host": f"127.0.0.1:{relay.server.port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
            **relay.auth,
            **(extra or {}),
        }
        head = "GET /v1/realtime HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode() + b"\r\n")
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status
        return cls(reader, writer)

    def send(self, first: int, payload: bytes, *, mask: bool = True) -> None:
        key = os.urandom(4)
        size = len(payload)
        mask_bit = 0x80 if mask else 0
        if size < 126:
            header = struct.pack("!BB", first, mask_bit | size)
        elif size < 65536:
            header = struct.pack("!BBH", first, mask_bit | 126, size)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, size)
        self.writer.write(header + (key + apply_mask(payload, key) if mask else payload))

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame (servers never mask)."""
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await self.reader.readexactly(size)

    async def until(self, opcode: int) -> bytes:
        async with asyncio.timeout(10):
            while True:
                got, payload = await self.frame()
                if got == opcode:
                    return payload

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def relay_on_scripted(
    start_relay: RelayFactory, **settings: object
) -> AsyncIterator[tuple[RelayHandle, ScriptedUpstream]]:
    upstream = await ScriptedUpstream().start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url, **settings)
    try:
        yield relay, upstream
    finally:
        await upstream.close()


async def test_an_unmasked_client_frame_is_a_protocol_error_and_others_carry_on(
    start_relay: RelayFactory,
) -> None:
    async with relay_on_scripted(start_relay) as (relay, upstream):
        healthy = await websockets.connect(relay.ws_url, additional_headers=relay.auth)
        await healthy.recv()
        bad = await RawClient.connect(relay)
        await bad.until(0x1)  # session.created
        bad.send(0x81, b'{"type":"input_audio_buffer.clear"}', mask=False)
        close = await bad.until(0x8)
        assert struct.unpack("!H", close[:2])[0] == 1002
        bad.close()
        await healthy.send('{"type":"input_audio_buffer.clear"}')
        for _ in range(50):
            if upstream.connections[0].received:
                break
            await asyncio.sleep(0.05)
        assert upstream.connections[0].received == [b'{"type":"input_audio_buffer.clear"}']
        assert not upstream.connections[1].received  # the bad frame never went upstream
        await healthy.close()


async def test_a_fragmented_message_goes_upstream_whole_and_pings_are_answered_in_between(
    start_relay: RelayFactory,
) -> None:
    async with relay_on_scripted(start_relay) as (relay, upstream):
        client = await RawClient.connect(relay)
        await client.until(0x1)
        event = b'{"type":"conversation.item.create","item":{"type":"message","role":"user",' + (
            b'"content":[{"type":"input_text","text":"in three pieces"}]}}'
        )
        client.send(0x01, event[:10])  # text, not final
        client.send(0x89, b"are you there")  # a ping between the fragments
        client.send(0x00, event[10:40])  # continuation
        client.send(0x80, event[40:])  # final continuation
        assert await client.until(0xA) == b"are you there"
        for _ in range(50):
            if upstream.connections[0].received:
                break
            await asyncio.sleep(0.05)
        assert upstream.connections[0].received == [event]
        client.close()


async def test_a_message_over_the_size_limit_is_refused_with_1009(start_relay: RelayFactory) -> None:
    async with relay_on_scripted(start_relay, max_message_bytes=4096) as (relay, upstream):
        client = await RawClient.connect(relay)
        await client.until(0x1)
        client.send(0x81, orjson.dumps({"type": "input_audio_buffer.append", "audio": "A" * 8000}))
        close = await client.until(0x8)
        assert struct.unpack("!H", close[:2])[0] == 1009
        client.close()
        assert not upstream.connections[0].received


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}, 400),
        (
            {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "8",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
            426,
        ),
        ({}, 400),  # a plain GET on the WebSocket path
    ],
)
async def test_bad_upgrades_get_an_http_answer(
    start_relay: RelayFactory, headers: dict[str, str], status: int
) -> None:
    async with relay_on_scripted(start_relay) as (relay, upstream), aiohttp.ClientSession() as http:
        async with http.get(
            relay.ws_url.replace("ws://", "http://"), headers={**relay.auth, **headers}
        ) as resp:
            assert resp.status == status
            if status == 426:
                assert resp.headers["Sec-WebSocket-Version"] == "13"
        assert not upstream.connections  # nothing was opened upstream for it


async def test_the_client_close_handshake_is_answered_with_its_code(start_relay: RelayFactory) -> None:
    async with relay_on_scripted(start_relay) as (relay, _):
        async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
            await ws.recv()
            await ws.close(code=4001, reason="done")
            assert ws.protocol.close_rcvd is not None
            assert ws.protocol.close_rcvd.code == 4001  # echoed, as RFC 6455 5.5.1 asks
        for _ in range(50):
            if relay.metric("relay_sessions_total", {"outcome": "client_closed"}) == 1:
                break
            await asyncio.sleep(0.05)
        assert relay.metric("relay_sessions_total", {"outcome": "client_closed"}) == 1


async def test_an_upstream_over_tls(
    start_relay: RelayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner, port = await start_simulator(SimulatorConfig(speed=50.0), ssl_context=context)
    # The relay trusts the system store (OpenSSL reads SSL_CERT_FILE) and this test's CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    import relay.io.websocket as websocket_io

    monkeypatch.setattr(websocket_io, "_ssl_context", None)  # loaded afresh with that CA
    relay = await start_relay(upstream="simulator", upstream_url=f"wss://127.0.0.1:{port}/v1/realtime")
    try:
        async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
            created = orjson.loads(await ws.recv())
            assert created["type"] == "session.created"
            await ws.send(
                orjson.dumps(
                    {"type": "response.create", "response": {"output_modalities": ["text"]}}
                ).decode()
            )
            async with asyncio.timeout(10):
                while (event := orjson.loads(await ws.recv()))["type"] != "response.done":
                    pass
            assert event["response"]["status"] == "completed"
    finally:
        await runner.cleanup()


async def test_text_that_is_not_utf8_is_refused_with_1007(start_relay: RelayFactory) -> None:
    async with relay_on_scripted(start_relay) as (relay, upstream):
        client = await RawClient.connect(relay)
        await client.until(0x1)
        client.send(0x81, b'{"type":"input_audio_buffer.clear","event_id":"\xc3\x28"}')
        close = await client.until(0x8)
        assert struct.unpack("!H", close[:2])[0] == 1007
        client.close()
        assert not upstream.connections[0].received


async def test_messages_before_a_bad_frame_in_the_same_read_are_still_forwarded(
    start_relay: RelayFactory,
) -> None:
    async with relay_on_scripted(start_relay) as (relay, upstream):
        client = await RawClient.connect(relay)
        await client.until(0x1)
        event = b'{"type":"input_audio_buffer.clear"}'
        client.send(0x81, event)
        client.send(0xC1, event)  # RSV1 without an extension, in the same write
        close = await client.until(0x8)
        assert struct.unpack("!H", close[:2])[0] == 1002
        client.close()
        for _ in range(50):
            if upstream.connections[0].received:
                break
            await asyncio.sleep(0.05)
        assert upstream.connections[0].received == [event]


async def test_a_client_answers_the_messages_that_came_with_the_101_before_a_bad_frame_fails_it() -> None:
    """The relay's client side: frames read with the handshake wait for the owner's handler,
    and a bad frame after them fails the connection only once the owner had them (and could
    answer): Autobahn 3.2 and 5.15 from the client side."""
    received: asyncio.Future[list[tuple[int, bytes]]] = asyncio.get_running_loop().create_future()

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
            + encode_frame(b'{"type":"session.created"}')
            + encode_frame(b"\xff")  # not UTF-8
        )
        frames = []  # the client's, masked, short
        while not frames or frames[-1][0] != 0x8:
            first, second = await reader.readexactly(2)
            key_and_payload = await reader.readexactly(4 + (second & 0x7F))
            frames.append((first & 0x0F, apply_mask(key_and_payload[4:], key_and_payload[:4])))
        received.set_result(frames)
        writer.close()

    listener = await asyncio.start_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        conn = await connect(URL(f"ws://127.0.0.1:{port}/"), {}, max_size=1 << 20, open_timeout_s=5)

        def answer(opcode: int, payload: bytes) -> None:
            conn.send(b"ack:" + payload)

        conn.set_handler(answer)
        async with asyncio.timeout(5):
            frames = await received
            await conn.closed
        assert frames == [
            (0x1, b'ack:{"type":"session.created"}'),
            (0x8, close_payload(1007, b"text message is not UTF-8")),
        ]
        assert conn.close_code == 1007
    finally:
        listener.close()


# ----------------------------------------------------------------------- buffers a client cannot grow
class _Transport:
    """Just enough of an asyncio transport to drive a connection by hand."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.reading = True
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.writes.append(b"".join(data))  # one writev on a real socket

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _server_connection() -> tuple[WebSocketConnection, _Transport]:
    conn = WebSocketConnection(client_side=False, max_size=1 << 24)
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def _client_connection() -> tuple[WebSocketConnection, _Transport]:
    conn = WebSocketConnection(client_side=True, max_size=1 << 24)
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def _unmasked(data: bytes) -> list[bytes]:
    """The payloads of the masked client frames in ``data``, in order."""
    payloads = []
    while data:
        size = data[1] & 0x7F
        offset = 2
        if size == 126:
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        key, start = data[offset : offset + 4], offset + 4
        payloads.append(apply_mask(data[start : start + size], key))
        data = data[start + size :]
    return payloads


async def test_frames_that_arrive_in_one_read_leave_in_one_write_in_order() -> None:
    """A relay pair by hand: what one read brings is forwarded with one write per peer."""
    inbound, _ = _server_connection()
    outbound, wire = _client_connection()
    inbound.set_handler(lambda opcode, payload: outbound.send(payload))
    events = [f'{{"type":"e","n":{i}}}'.encode() for i in range(5)]
    inbound.data_received(b"".join(client_frame(e) for e in events))
    assert len(wire.writes) == 1
    assert _unmasked(wire.writes[0]) == events
    inbound.data_received(client_frame(b'{"type":"alone"}'))  # one frame: written at once
    assert len(wire.writes) == 2
    assert _unmasked(wire.writes[1]) == [b'{"type":"alone"}']


async def test_a_control_frame_sent_during_a_batch_follows_what_was_gathered() -> None:
    inbound, _ = _server_connection()
    outbound, wire = _client_connection()

    def forward(opcode: int, payload: bytes) -> None:
        outbound.send(payload)
        if payload == b"1":
            outbound.ping()  # written directly: what was gathered goes first

    inbound.set_handler(forward)
    inbound.data_received(b"".join(client_frame(p) for p in (b"0", b"1", b"2")))
    frames = b"".join(wire.writes)
    assert [f[0] for f in _frames(frames)] == [0x81, 0x81, 0x89, 0x81]  # text, text, ping, text
    assert _unmasked(b"".join(f for f in _frames(frames) if f[0] == 0x81)) == [b"0", b"1", b"2"]


def _frames(data: bytes) -> list[bytes]:
    """Split small masked frames apart (payloads under 126 bytes)."""
    frames = []
    while data:
        end = 2 + 4 + (data[1] & 0x7F)
        frames.append(data[:end])
        data = data[end:]
    return frames


async def test_messages_waiting_for_a_handler_pause_reading_and_are_all_delivered() -> None:
    conn, transport = _server_connection()
    frames = [f'{{"n":{i}}}'.encode() for i in range(MAX_EARLY_MESSAGES + 4)]
    conn.data_received(b"".join(client_frame(f) for f in frames))  # one read: all of it is kept
    assert not transport.reading  # but nothing more is read until a handler takes them
    got: list[bytes] = []
    conn.set_handler(lambda opcode, payload: got.append(payload))
    assert got == frames
    assert transport.reading


async def test_large_messages_waiting_for_a_handler_pause_reading_by_their_bytes() -> None:
    conn, transport = _server_connection()
    conn.data_received(client_frame(b"x" * 600_000))
    assert transport.reading
    conn.data_received(client_frame(b"y" * 600_000))
    assert not transport.reading  # 1.2 MB waiting: over MAX_EARLY_BYTES


async def test_data_after_our_close_frame_is_read_but_never_kept() -> None:
    """A refused client (beta clients under RELAY_BETA_CLIENTS=reject) kept sending during the
    close wait: every frame was kept for a handler that would never come (1.35 GB in 4.5 s)."""
    conn, transport = _server_connection()
    closing = asyncio.create_task(conn.close(4000, b"refused"))
    await asyncio.sleep(0)
    assert transport.writes == [encode_frame(close_payload(4000, b"refused"), 0x8)]
    frame = client_frame(b"z" * 60_000)
    for _ in range(100):
        conn.data_received(frame * 10)
        assert transport.reading  # still read, to reach the peer's close frame
    assert conn._early == []  # nothing was kept
    conn.data_received(client_frame(close_payload(4000), 0x88))
    assert transport.closed  # the peer's close arrived: the socket goes
    conn.connection_lost(None)
    await closing


async def test_a_large_message_is_written_apart_from_its_header() -> None:
    conn, transport = _server_connection()
    payload = os.urandom(200_000)
    conn.send(payload, 0x2)
    assert len(transport.writes) == 2
    assert transport.writes[1] is payload
    assert b"".join(transport.writes) == encode_frame(payload, 0x2)
    conn.send(b"small")
    assert transport.writes[2] == encode_frame(b"small")  # small ones: one write, as before


async def test_a_connection_aborted_during_a_batch_drops_what_it_gathered() -> None:
    """A stuck peer aborted while a read's frames are handled: its gathered frames go with the
    socket, and the batch's other connections still get theirs."""
    inbound, _ = _server_connection()
    doomed, doomed_wire = _client_connection()
    other, other_wire = _client_connection()

    def forward(opcode: int, payload: bytes) -> None:
        doomed.send(payload)
        other.send(payload)
        if payload == b"1":
            doomed.abort()

    inbound.set_handler(forward)
    inbound.data_received(b"".join(client_frame(p) for p in (b"0", b"1", b"2")))
    assert doomed_wire.writes == []
    assert _unmasked(b"".join(other_wire.writes)) == [b"0", b"1", b"2"]
