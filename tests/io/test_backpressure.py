"""A slow reader on either side makes the relay stop reading from the other, not buffer.

The relay runs as its own process so its memory can be measured alone. The bound (64 MiB of
growth) is far below what buffering would cost: each test pushes 256 MiB at the slow side.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os

import orjson
import psutil
import websockets

from tests.conftest import RelayFactory
from tests.support.relay_process import relay_process
from tests.support.scripted_upstream import ScriptedConnection, ScriptedUpstream

GROWTH_BOUND = 64 * 1024 * 1024
PUSHED = 256 * 1024 * 1024
DELTA = orjson.dumps(
    {
        "type": "response.output_audio.delta",
        "event_id": "event_1",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(os.urandom(48_000)).decode(),
    }
)


async def test_slow_client_does_not_grow_relay_memory() -> None:
    sent = 0

    async def flood(conn: ScriptedConnection, data: bytes) -> None:
        nonlocal sent
        if b"response.create" in data:
            while sent < PUSHED:
                await conn.send(DELTA)
                sent += len(DELTA)

    upstream = await ScriptedUpstream(flood).start()
    async with relay_process(
        RELAY_UPSTREAM="simulator", RELAY_UPSTREAM_URL=upstream.url, RELAY_VALIDATE_EVENTS="false"
    ) as relay:
        rss = psutil.Process(relay.proc.pid)
        async with websockets.connect(
            relay.ws_url, additional_headers=relay.auth, max_size=None, max_queue=4
        ) as ws:
            await ws.recv()
            before = rss.memory_info().rss
            await ws.send('{"type":"response.create"}')
            await asyncio.sleep(3)  # the client reads nothing meanwhile
            grown = rss.memory_info().rss - before
            assert sent < PUSHED  # the upstream was held back by TCP backpressure
            assert grown < GROWTH_BOUND, f"relay grew by {grown / 2**20:.1f} MiB"
            received = 0
            async for _ in ws:  # now read: everything arrives, nothing was dropped
                received += 1
                if received * len(DELTA) >= PUSHED:
                    break
    await upstream.close()


async def test_slow_upstream_does_not_grow_relay_memory() -> None:
    stall = asyncio.Event()

    async def never_read(conn: ScriptedConnection, data: bytes) -> None:
        await stall.wait()  # stop reading: the relay must stop reading the client

    upstream = await ScriptedUpstream(never_read).start()
    frame = orjson.dumps(
        {
            "type": "input_audio_buffer.append",
            "audio": base64.b64encode(os.urandom(96_000)).decode(),
        }
    ).decode()
    async with relay_process(
        RELAY_UPSTREAM="simulator", RELAY_UPSTREAM_URL=upstream.url, RELAY_VALIDATE_EVENTS="false"
    ) as relay:
        rss = psutil.Process(relay.proc.pid)
        async with websockets.connect(relay.ws_url, additional_headers=relay.auth, max_size=None) as ws:
            await ws.recv()
            before = rss.memory_info().rss
            pushed = 0

            async def push() -> None:
                nonlocal pushed
                while pushed < PUSHED:
                    await ws.send(frame)
                    pushed += len(frame)

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(push(), timeout=4)
            grown = rss.memory_info().rss - before
            assert pushed < PUSHED  # the client was held back
            assert grown < GROWTH_BOUND, f"relay grew by {grown / 2**20:.1f} MiB"
            stall.set()
    await upstream.close()


async def test_an_upstream_stuck_beyond_the_timeout_is_closed_with_a_clear_code(
    start_relay: RelayFactory,
) -> None:
    stall = asyncio.Event()

    async def never_read(conn: ScriptedConnection, data: bytes) -> None:
        await stall.wait()

    upstream = await ScriptedUpstream(never_read).start()
    relay = await start_relay(
        upstream="simulator",
        upstream_url=upstream.url,
        stuck_peer_timeout_s=1.0,
        validate_events=False,
    )
    frame = orjson.dumps(
        {
            "type": "input_audio_buffer.append",
            "audio": base64.b64encode(os.urandom(96_000)).decode(),
        }
    ).decode()
    events = []
    async with websockets.connect(relay.ws_url, additional_headers=relay.auth, max_size=None) as ws:
        await ws.recv()

        async def push() -> None:
            while True:
                await ws.send(frame)

        pusher = asyncio.create_task(push())
        async for message in ws:
            events.append(orjson.loads(message))
            if events[-1]["type"] == "error":
                break
        pusher.cancel()
        # The close frame follows the error at once; the client's own writes are still stuck
        # behind its full send buffer, so read the code the relay sent and drop the socket.
        for _ in range(100):
            if ws.protocol.close_rcvd is not None:
                break
            await asyncio.sleep(0.02)
        code = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
        ws.transport.abort()
    stall.set()
    assert events[-1]["error"]["code"] == "upstream_stuck"
    assert code == 1013
    await upstream.close()
