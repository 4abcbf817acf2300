"""The simulator's socket: arrival order across its two paths, TCP-level stalls, going away."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
from yarl import URL

from relay.core.websocket import OP_TEXT, encode_frame
from relay.io.websocket import WebSocketConnection, connect
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.simulator.conftest import check_server_event
from tests.support.sim_control import SimControl

AUTH = {"Authorization": "Bearer k"}
MANUAL_TURNS = {
    "type": "session.update",
    "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
}


def _append(ms: int) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(48 * ms)).decode()}


class Client:
    """A client on the relay's own WebSocket layer: frames can be written in a single burst."""

    def __init__(self, conn: WebSocketConnection) -> None:
        self.conn = conn
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        conn.set_handler(lambda opcode, payload: self.events.put_nowait(orjson.loads(payload)))

    def burst(self, *events: dict[str, Any]) -> None:
        """All frames in one write: they reach the simulator in one read."""
        assert self.conn.transport is not None
        frames = (encode_frame(orjson.dumps(e), OP_TEXT, mask=True) for e in events)
        self.conn.transport.write(b"".join(frames))

    async def next(self, event_type: str | None = None) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                event = await self.events.get()
                if event_type is None or event["type"] in (event_type, "error"):
                    return event


async def _client(port: int) -> Client:
    url = URL(f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime")
    client = Client(await connect(url, AUTH, max_size=1 << 24, open_timeout_s=10))
    assert (await client.next())["type"] == "session.created"
    client.burst(MANUAL_TURNS)
    assert (await client.next())["type"] == "session.updated"
    return client


async def test_appends_taken_at_once_stay_in_order_with_queued_events() -> None:
    """A commit waits in the session's queue; the append right behind it must not overtake it."""
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), speed=100.0, reply_text="Hi"))
    try:
        client = await _client(port)
        commit = {"type": "input_audio_buffer.commit"}
        client.burst(_append(200), commit, _append(150), commit)
        first = await client.next("input_audio_buffer.committed")
        second = await client.next("input_audio_buffer.committed")
        assert (first["type"], second["type"]) == ("input_audio_buffer.committed",) * 2, (first, second)
        assert second["previous_item_id"] == first["item_id"]
        client.conn.close_now()
    finally:
        await runner.cleanup()


async def test_a_stall_stops_reading_the_socket_and_loses_nothing() -> None:
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), speed=100.0, reply_text="Hi"))
    control = SimControl(f"http://127.0.0.1:{port}")
    try:
        client = await _client(port)
        (listed,) = await control.sessions()
        before = (await control.session(listed["id"]))["received_types"]
        await control.fault(listed["id"], kind="stall", seconds=2)
        big = _append(10_000)  # 10 s of audio, ~640 KB of base64 per frame
        client.burst(*([big] * 48), {"type": "input_audio_buffer.commit"})  # ~30 MB
        await asyncio.sleep(0.5)
        assert client.conn.transport is not None
        # More than the loopback socket buffers hold: the rest waits in the client's own buffer.
        assert client.conn.transport.get_write_buffer_size() > 0
        assert (await control.session(listed["id"]))["received_types"] == before
        committed = await client.next("input_audio_buffer.committed")
        assert committed["type"] == "input_audio_buffer.committed", committed
        received = (await control.session(listed["id"]))["received_types"]
        assert received[len(before) :] == ["input_audio_buffer.append"] * 48 + ["input_audio_buffer.commit"]
        client.conn.close_now()
    finally:
        await runner.cleanup()


async def test_shutting_down_closes_open_sessions_with_1001() -> None:
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast()))
    client = await _client(port)
    await runner.cleanup()
    async with asyncio.timeout(10):
        await client.conn.closed
    assert client.conn.close_code == 1001


async def test_retrieved_user_item_carries_its_committed_audio() -> None:
    """The API returns a user item's audio on conversation.item.retrieve (reference §2.5)."""
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), speed=100.0, reply_text="Hi"))
    try:
        client = await _client(port)
        audio = bytes(range(256)) * 75  # 200 ms of PCM16, recognisable bytes
        append = {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}
        client.burst(append, {"type": "input_audio_buffer.commit"})
        committed = await client.next("input_audio_buffer.committed")
        added = await client.next("conversation.item.added")
        assert "audio" not in added["item"]["content"][0]  # the stream events carry no audio
        client.burst({"type": "conversation.item.retrieve", "item_id": committed["item_id"]})
        retrieved = await client.next("conversation.item.retrieved")
        check_server_event(retrieved)  # the SDK's own type accepts it
        part = retrieved["item"]["content"][0]
        assert (part["type"], base64.b64decode(part["audio"])) == ("input_audio", audio)
        client.burst({"type": "conversation.item.delete", "item_id": committed["item_id"]})
        assert (await client.next("conversation.item.deleted"))["item_id"] == committed["item_id"]
        client.conn.close_now()
    finally:
        await runner.cleanup()
