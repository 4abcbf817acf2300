"""One client's frames must never hurt the relay: each attack of the "Hostile clients" review,
replayed with a raw socket against a real relay, and the bound it now meets.

Memory and event-loop blocking are measured from outside, on a ``relay serve`` process: its peak
RSS (VmHWM) and how long its /healthz takes to answer while the attack runs. Figures before the
fixes, same machine and harness: an 8 MiB item of empty arrays +4.9 GB and 19 s of blocked loop;
24 MiB of nested arrays +1.1 GB and 5.8 s; 4 million empty fragments +31 MiB; a refused beta
client pushing during the close wait +3.4 GB in 4.5 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
import psutil

from tests.conftest import RelayFactory
from tests.support.raw_frames import client_frame
from tests.support.relay_process import RelayProcess, relay_process
from tests.support.scripted_upstream import ScriptedUpstream

MiB = 1024 * 1024


# ---------------------------------------------------------------------------------- tools


@dataclass
class Raw:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def connect(cls, port: int, token: str, extra: dict[str, str] | None = None) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        headers = {
            "Host": f"127.0.0.1:{port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
            "Authorization": f"Bearer {token}",
            **(extra or {}),
        }
        head = "GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\n"
        writer.write((head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        return cls(reader, writer)

    async def send(self, payload: bytes, first: int = 0x81) -> None:
        self.writer.write(client_frame(payload, first))
        await self.writer.drain()

    async def frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await self.reader.readexactly(size)

    async def event(self, kind: str, timeout: float = 5) -> dict[str, object]:
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.frame()
                assert opcode != 0x8, f"closed: {payload!r}"
                event = orjson.loads(payload)
                if event["type"] == kind:
                    return dict(event)

    async def close_code(self, timeout: float = 10) -> int:
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.frame()
                if opcode == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0])

    async def goodbye(self) -> None:
        """The close handshake, so the relay ends the session at once."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            await self.send(struct.pack("!H", 1000), first=0x88)
            await self.close_code(timeout=2)
        self.close()

    def close(self) -> None:
        self.writer.close()


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return psutil.Process(pid).memory_info().rss


class _Health:
    """Asks the relay's /healthz every 50 ms; ``worst`` is the slowest answer seen."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.worst = 0.0
        self.answers = 0

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[_Health]:
        stop = asyncio.Event()

        async def probe() -> None:
            async with aiohttp.ClientSession() as http:
                while not stop.is_set():
                    started = time.monotonic()
                    async with http.get(self.url) as response:
                        assert response.status == 200
                    self.worst = max(self.worst, time.monotonic() - started)
                    self.answers += 1
                    await asyncio.sleep(0.05)

        task = asyncio.create_task(probe())
        try:
            yield self
        finally:
            stop.set()
            await task


@contextlib.asynccontextmanager
async def _relay_serve(**env: str) -> AsyncIterator[tuple[RelayProcess, ScriptedUpstream]]:
    upstream = await ScriptedUpstream().start()
    try:
        async with relay_process(RELAY_UPSTREAM="simulator", RELAY_UPSTREAM_URL=upstream.url, **env) as relay:
            yield relay, upstream
    finally:
        await upstream.close()


async def _received(upstream: ScriptedUpstream, count: int) -> list[bytes]:
    """What the upstream received, once it has ``count`` frames (it records without telling)."""
    received = upstream.connections[0].received
    for _ in range(250):
        if len(received) >= count:
            break
        await asyncio.sleep(0.02)
    return received


CLEAR = b'{"type":"input_audio_buffer.clear","event_id":"still_here"}'


async def _attack_one_message(payload: bytes) -> tuple[dict[str, object], int, float]:
    """Send ``payload`` to a relay process; (its error, peak RSS growth, slowest /healthz). The
    session must stay open: the next event goes upstream, the refused one never does."""
    async with _relay_serve() as (relay, upstream):
        client = await Raw.connect(relay.port, relay.token)
        await client.event("session.created")
        await asyncio.sleep(0.2)
        before = _peak_rss(relay.proc.pid)
        async with _Health(relay.port).watching() as health:
            started = time.monotonic()
            await client.send(payload)
            error = await client.event("error", timeout=10)
            answered = time.monotonic() - started
            await asyncio.sleep(0.2)
        grown = _peak_rss(relay.proc.pid) - before
        await client.send(CLEAR)
        assert await _received(upstream, 1) == [CLEAR]  # the session carried on; nothing else went up
        await client.goodbye()
    assert health.answers >= 3
    assert answered < 2
    return dict(error["error"]), grown, health.worst  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------- 1. one message
async def test_an_item_of_millions_of_empty_arrays_is_refused_before_it_is_parsed() -> None:
    """8 MiB, 2.8 million empty arrays as content: +4.9 GB and 19 s of blocked loop before;
    now refused from a byte count before the parse (measured: +24 MiB, 0.1 s)."""
    payload = (
        b'{"type":"conversation.item.create","event_id":"arrays","item":{"type":"message",'
        b'"role":"user","content":[' + b"[]," * 2_800_000 + b"[]]}}"
    )
    error, grown, worst = await _attack_one_message(payload)
    assert (error["code"], error["event_id"]) == ("event_too_complex", "arrays")
    assert "up to 65536" in str(error["message"])
    assert grown < 64 * MiB, f"relay grew by {grown / MiB:.0f} MiB"
    assert worst < 1.0, f"/healthz took {worst:.2f} s"


async def test_a_large_frame_of_a_small_event_type_is_refused_from_its_first_bytes() -> None:
    """24 MiB of nested arrays under an unknown type: +1.1 GB and 5.8 s before; now refused by
    the 64 KiB limit of its type, read from the frame's first bytes (measured: +48 MiB, the
    frame's buffer and its one copy, 0.1 s)."""
    unit = b"[[[[[[[[[[]]]]]]]]]],"
    payload = b'{"type":"nope","a":[' + unit * ((24 * MiB - 64) // len(unit)) + b"[]]}"
    error, grown, worst = await _attack_one_message(payload)
    assert error["code"] == "event_too_large"
    assert "'nope' events of up to 65536 bytes" in str(error["message"])
    assert grown < 80 * MiB, f"relay grew by {grown / MiB:.0f} MiB"
    assert worst < 1.0, f"/healthz took {worst:.2f} s"


async def test_a_large_legal_item_is_still_forwarded_byte_for_byte(start_relay: RelayFactory) -> None:
    """A user item carrying 8 MiB of audio (10.7 MiB of JSON) passes every bound unchanged."""
    upstream = await ScriptedUpstream().start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    audio = base64.b64encode(os.urandom(8 * MiB)).decode()
    item = orjson.dumps(
        {
            "type": "conversation.item.create",
            "event_id": "seed_audio",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]},
        }
    )
    client = await Raw.connect(relay.server.port, relay.token)
    await client.event("session.created")
    await client.send(item)
    await client.send(CLEAR)
    assert await _received(upstream, 2) == [item, CLEAR]  # identical bytes, in order
    await client.goodbye()
    await upstream.close()


# ---------------------------------------------------------------------------------- 2. fragments
async def test_empty_continuation_fragments_cannot_grow_the_relay() -> None:
    """4 million empty fragments (24 MB on the wire) were kept as a list (+31 MiB); each now
    costs 512 bytes of the message's 24 MiB, so the connection fails with 1009 after 49,152."""
    async with _relay_serve() as (relay, upstream):
        client = await Raw.connect(relay.port, relay.token)
        await client.event("session.created")
        before = _peak_rss(relay.proc.pid)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            await client.send(b'{"type":"input_audio_buffer.clear"', first=0x01)
            chunk = client_frame(b"", 0x00) * 10_000
            with contextlib.suppress(ConnectionError):
                while sent < 4_000_000:
                    client.writer.write(chunk)
                    await client.writer.drain()
                    sent += 10_000

        async with _Health(relay.port).watching() as health:
            flooding = asyncio.create_task(flood())
            assert await client.close_code() == 1009
            flooding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flooding
        grown = _peak_rss(relay.proc.pid) - before
        client.close()
        assert sent < 4_000_000  # refused long before the end (after 49,152; the rest was in flight)
        assert grown < 16 * MiB, f"relay grew by {grown / MiB:.0f} MiB"
        assert health.worst < 1.0
        assert not upstream.connections[0].received


# ---------------------------------------------------------------------------------- 3. refused beta clients
async def test_a_refused_beta_client_cannot_fill_the_close_wait() -> None:
    """RELAY_BETA_CLIENTS=reject: the relay sends its error and close 4000, then waits up to 5 s
    for the client's close. A client that keeps sending instead was buffered whole (+3.4 GB in
    4.5 s); data after the relay's close is now read and dropped."""
    async with relay_process(RELAY_UPSTREAM="simulator", RELAY_BETA_CLIENTS="reject") as relay:
        client = await Raw.connect(relay.port, relay.token, {"OpenAI-Beta": "realtime=v1"})
        error = await client.event("error")
        assert error["error"]["code"] == "beta_api_shape_disabled"  # type: ignore[index]
        before = _peak_rss(relay.proc.pid)
        append = client_frame(b'{"type":"input_audio_buffer.append","audio":"' + b"A" * 65536 + b'"}') * 16
        pushed, started = 0, time.monotonic()
        with contextlib.suppress(ConnectionError):
            while time.monotonic() - started < 3:
                client.writer.write(append)
                await client.writer.drain()
                pushed += len(append)
        grown = _peak_rss(relay.proc.pid) - before
        client.close()
    assert pushed > 256 * MiB  # the relay kept reading (to find the close frame)
    assert grown < 32 * MiB, f"relay grew by {grown / MiB:.0f} MiB after {pushed / MiB:.0f} MiB pushed"


# ---------------------------------------------------------------------------------- 4. duplicate keys
async def test_duplicate_keys_are_refused_and_never_forwarded(start_relay: RelayFactory) -> None:
    """orjson keeps a key's last value, the API's parser may keep the first: a forbidden tool
    hidden in the first ``session`` passed the policy and reached the API."""
    upstream = await ScriptedUpstream().start()
    relay = await start_relay(
        upstream="simulator", upstream_url=upstream.url, policy_allowed_tool_types=["function"]
    )
    smuggled = [
        b'{"type":"session.update","event_id":"d1","session":{"type":"realtime","tools":[{"type":"mcp",'
        b'"server_label":"x","server_url":"https://mcp.example"}]},"session":{"type":"realtime"}}',
        b'{"type":"input_audio_buffer.append","event_id":"d2","audio":"AAAA","audio":"AAAAAAAA"}',
        b'{"type":"session.update","type":"input_audio_buffer.append","event_id":"d3","audio":"AAAA"}',
        b'{"type":"response.create","event_id":"d4","response":{"instructions":"a","instructions":"b"}}',
    ]
    client = await Raw.connect(relay.server.port, relay.token)
    await client.event("session.created")
    for frame in smuggled:
        await client.send(frame)
        error = (await client.event("error"))["error"]
        assert error["code"] == "duplicate_key", (frame, error)  # type: ignore[index]
    append = b'{"type":"input_audio_buffer.append","event_id":"ok","audio":"AAAA"}'
    await client.send(append)
    assert await _received(upstream, 1) == [append]  # none of the others went up
    await client.goodbye()
    await upstream.close()


# ---------------------------------------------------------------------------------- 5. validation off
async def test_the_policy_applies_when_validation_is_off(start_relay: RelayFactory) -> None:
    """RELAY_VALIDATE_EVENTS=false used to turn the operator's policy off too."""
    upstream = await ScriptedUpstream().start()
    relay = await start_relay(
        upstream="simulator",
        upstream_url=upstream.url,
        validate_events=False,
        policy_force_session={"instructions": "Operator instructions."},
        policy_allowed_tool_types=["function"],
    )
    client = await Raw.connect(relay.server.port, relay.token)
    await client.event("session.created")
    append = b'{"type": "input_audio_buffer.append", "audio": "not checked: validation is off"}'
    future = b'{"type":"conversation.item.future_event","x":[1,2,3]}'
    await client.send(b'{"type":"session.update","session":{"type":"realtime","instructions":"mine"}}')
    await client.send(append)
    await client.send(future)
    await client.send(
        b'{"type":"session.update","event_id":"t","session":{"type":"realtime","tools":'
        b'[{"type":"mcp","server_label":"x","server_url":"https://mcp.example"}]}}'
    )
    assert (await client.event("error"))["error"]["code"] == "forbidden_parameter"  # type: ignore[index]
    for duplicated in (
        b'{"type":"session.update","session":{"tools":[]},"session":{}}',
        # an append to the relay's eye (its first bytes), a session.update to a last-wins parser
        b'{"type":"input_audio_buffer.append","type":"session.update","session":{"tools":[{"type":"mcp"}]}}',
        # and the other way round: an append to a last-wins parser, a session.update to the API's
        b'{"type":"session.update","session":{"tools":[{"type":"mcp"}]},"type":"input_audio_buffer.append"}',
    ):
        await client.send(duplicated)
        assert (await client.event("error"))["error"]["code"] == "duplicate_key"  # type: ignore[index]
    await client.send(b"{not json")
    assert (await client.event("error"))["error"]["code"] == "invalid_json"  # type: ignore[index]
    await client.send(CLEAR)
    sent = await _received(upstream, 5)  # the first: the relay's own, at connect, with the policy
    assert orjson.loads(sent[1])["session"]["instructions"] == "Operator instructions."
    assert sent[2:] == [append, future, CLEAR]  # untouched: appends and unknown types pass as sent
    await client.goodbye()
    await upstream.close()
