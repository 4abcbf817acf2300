"""A hostile or broken client, or an upstream gone bad, inside an open session: nothing secret
leaves, nothing grows without bound, one client's flood costs only its own session."""

from __future__ import annotations

import asyncio
import time

import orjson
import psutil
import pytest
import websockets

from tests.conftest import RelayFactory
from tests.support.conversation import RecordingClient, text_item
from tests.support.live_upstream import LiveLikeUpstream
from tests.support.relay_process import relay_process


async def test_a_replacement_upstream_rejecting_the_key_ends_at_once_without_a_fragment(
    start_relay: RelayFactory,
) -> None:
    """The recovery path used to pass the API's "Incorrect API key provided: sk-proj-AB***...WXYZ"
    into the client's error and close reason, and to retry a rejected key eight times (1013)."""
    upstream = await LiveLikeUpstream(handshake_s=0.0, ack_s=0.0, reject_key_after=1).start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url, reconnect_base_delay_s=0.05)
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    await client.send(text_item("hello"))
    await client.wait_for("conversation.item.added")
    started = time.monotonic()
    await upstream.drop(upstream.current)
    error = await client.wait_for("error")
    await client._reader  # the relay closes the connection
    assert time.monotonic() - started < 5
    assert len(upstream.sessions) == 2  # one attempt: a rejected key is not retried
    assert client.ws.close_code == 1008
    assert error["error"]["code"] == "upstream_auth_failed"
    everything = orjson.dumps(client.events).decode() + str(client.ws.close_reason)
    assert "sk-" not in everything
    assert "WXYZ" not in everything
    await upstream.close()


async def test_a_client_that_never_reads_cannot_grow_the_relay() -> None:
    """A ping flood (or invalid events) from a client that reads nothing used to grow the relay
    by 191 MiB in 4 s: the relay kept reading it and queueing pongs and errors it never read."""
    upstream = await LiveLikeUpstream(handshake_s=0.0, ack_s=0.0).start()
    async with relay_process(RELAY_UPSTREAM="simulator", RELAY_UPSTREAM_URL=upstream.url) as relay:
        process = psutil.Process(relay.proc.pid)
        _, writer = await _raw_client(relay.port, relay.token)
        before = process.memory_info().rss
        ping = _masked(0x9, b"x" * 125)
        invalid = _masked(0x1, b'{"type":"nope","event_id":"' + b"e" * 400 + b'"}')
        deadline = time.monotonic() + 4
        sent = 0
        while time.monotonic() < deadline:  # write without ever reading
            writer.write((ping + invalid) * 64)
            sent += 64 * (len(ping) + len(invalid))
            try:
                await asyncio.wait_for(writer.drain(), 0.2)
            except TimeoutError:
                break  # the relay stopped reading us: the flood backs up in our own buffers
        grown = process.memory_info().rss - before
        async with asyncio.timeout(5):  # the relay itself stays responsive for everyone else
            reader2, writer2 = await asyncio.open_connection("127.0.0.1", relay.port)
            writer2.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await reader2.readline()).startswith(b"HTTP/1.1 200")
            writer2.close()
        writer.transport.abort()
        print(f"\nflooded {sent / 2**20:.1f} MiB without reading; relay grew {grown / 2**20:.1f} MiB")
        assert grown < 24 * 2**20
    await upstream.close()


async def _raw_client(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**16)
    writer.transport.set_write_buffer_limits(high=2**20)
    writer.write(
        (
            "GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    assert (await reader.readline()).startswith(b"HTTP/1.1 101")
    return reader, writer


def _masked(opcode: int, payload: bytes) -> bytes:
    from websockets.speedups import apply_mask

    key = b"\x01\x02\x03\x04"
    size = len(payload)
    header = (
        bytes([0x80 | opcode, 0x80 | size])
        if size < 126
        else bytes([0x80 | opcode, 0xFE]) + size.to_bytes(2, "big")
    )
    return header + key + apply_mask(payload, key)


@pytest.mark.parametrize("flood", ["invalid-events"])
async def test_errors_and_log_lines_for_a_flood_are_bounded(start_relay: RelayFactory, flood: str) -> None:
    upstream = await LiveLikeUpstream(handshake_s=0.0, ack_s=0.0).start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
        await ws.recv()
        for n in range(2000):
            await ws.send(orjson.dumps({"type": "nope", "event_id": f"bad-{n}"}).decode())
        await ws.send(orjson.dumps({"type": "input_audio_buffer.clear", "event_id": "last"}).decode())
        errors = 0
        while True:
            event = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if event["type"] == "input_audio_buffer.cleared":
                break
            errors += event["type"] == "error"
    assert 50 <= errors < 200  # the burst, then the rate: not 2000
    assert relay.metric("relay_validation_rejections_total", {"code": "invalid_value"}) == 2000
    assert relay.metric("relay_client_errors_suppressed_total") == 2000 - errors
    await upstream.close()


async def test_the_embedded_simulator_serves_no_control_api(start_relay: RelayFactory) -> None:
    """The control API reads any session's text and injects replies: a local page or process
    guessing the embedded simulator's port must find nothing there."""
    import aiohttp

    from relay.app import SIMULATOR_URL

    relay = await start_relay(upstream="simulator")
    sim_port = relay.app[SIMULATOR_URL].split(":")[2].split("/")[0]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{sim_port}/_sim/sessions") as resp,
    ):
        assert resp.status == 404
    client = await RecordingClient.connect(relay.ws_url, relay.token)  # the relay itself works
    await client.wait_for("session.created")
    await client.close()
