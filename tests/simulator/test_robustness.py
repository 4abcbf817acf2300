"""No client input crashes the simulator or reaches another session; hundreds of sessions at once.

The fuzzing drives a real :class:`SimSession` in-process (its output collected by a plain sink,
no sockets) so hypothesis can try many inputs quickly; the socket tests then show isolation and
scale over real connections.
"""

from __future__ import annotations

import asyncio
import base64
import random
from typing import Any

import orjson
import psutil
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core.protocol import GA_CLIENT_EVENT_TYPES
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import Script, start_simulator
from relay.simulator.session import SimSession
from relay.simulator.timing import Timing
from tests.simulator.conftest import AUTH, SimClient, check_server_event, ws_url

TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
TEMPLATES: list[dict[str, Any]] = [
    {"type": "session.update", "session": {"type": "realtime", "tools": [TOOL], "instructions": "x"}},
    {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}},
    {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}},
    },
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x10\x20" * 2400).decode()},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {
        "type": "conversation.item.create",
        "previous_item_id": "root",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "get_weather"}],
        },
    },
    {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "c1", "output": "{}"},
    },
    {"type": "conversation.item.retrieve", "item_id": "item_1"},
    {"type": "conversation.item.delete", "item_id": "item_1"},
    {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 10},
    {"type": "response.create", "response": {"output_modalities": ["text"], "max_output_tokens": 2}},
    {"type": "response.create", "response": {"conversation": "none", "input": []}},
    {"type": "response.cancel"},
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "session",
        "item",
        "audio",
        "item_id",
        "response",
        "previous_item_id",
        "content_index",
        "audio_end_ms",
        "event_id",
    ]
)


@st.composite
def mutated_event(draw: st.DrawFn) -> str:
    """A template event with one field replaced, removed or added, or a raw junk frame."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.text(max_size=40))
    event = dict(draw(st.sampled_from(TEMPLATES)))
    if choice <= 3:
        event[draw(field_names)] = draw(json_values)
    elif choice <= 5:
        event.pop(draw(st.sampled_from(sorted(event))), None)
    elif choice == 6:
        event["type"] = draw(st.sampled_from(GA_CLIENT_EVENT_TYPES))
    return orjson.dumps(event).decode()


async def _feed(frames: list[str]) -> list[dict[str, Any]]:
    emitted: list[dict[str, Any]] = []

    async def sink(event: dict[str, Any]) -> None:
        emitted.append(event)

    config = SimulatorConfig(timing=Timing.fast(), speed=10_000.0, reply_text="Sure.")
    session = SimSession(config, "gpt-realtime", sink, Script())
    await session.start()
    for frame in frames:
        await session.handle_frame(frame)
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    await session.close()
    return emitted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_event(), min_size=1, max_size=12))
def test_no_client_input_breaks_a_session(frames: list[str]) -> None:
    emitted = asyncio.run(_feed(frames))
    for event in emitted:
        check_server_event(event)
        assert event.get("error", {}).get("type") != "server_error", event


async def test_junk_on_one_socket_does_not_touch_another(sim_port: int) -> None:
    rng = random.Random(7)
    junk = [
        rng.choice(TEMPLATES) | {rng.choice(["item", "session", "audio"]): rng.choice([None, 1, "x", []])}
        for _ in range(200)
    ]
    async with (
        websockets.connect(ws_url(sim_port), additional_headers=AUTH, max_size=None) as noisy,
        websockets.connect(ws_url(sim_port), additional_headers=AUTH, max_size=None) as calm,
    ):
        other = SimClient(calm)
        await other.until("session.created")
        await other.send(
            {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
        )
        for event in junk:
            await noisy.send(orjson.dumps(event).decode())
        await noisy.send(b"\xff" * 10)
        await other.send(TEMPLATES[6])
        await other.send({"type": "response.create"})
        await other.until("response.done")
        assert not [e for e in other.events if e["type"] == "error"]
        await noisy.send('{"type": "input_audio_buffer.clear", "event_id": "last"}')
        async with asyncio.timeout(10):
            while '"input_audio_buffer.cleared"' not in await noisy.recv():
                pass  # the noisy session is still alive and in order


async def _one_turn(port: int, index: int) -> str:
    async with websockets.connect(ws_url(port), additional_headers=AUTH, max_size=None) as ws:
        client = SimClient(ws)
        await client.until("session.created", timeout=60)
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": f"number {index}"}],
        }
        await client.send({"type": "conversation.item.create", "item": item})
        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        done = (await client.until("response.done", timeout=60))[-1]["response"]
        return str(done["output"][0]["content"][0]["text"])


@pytest.mark.slow
async def test_hundreds_of_concurrent_sessions() -> None:
    count = 300
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), speed=50.0))
    process = psutil.Process()
    before = process.memory_info().rss
    try:
        texts = await asyncio.gather(*(_one_turn(port, i) for i in range(count)))
    finally:
        await runner.cleanup()
    assert texts == [f"You said: number {i}." for i in range(count)]
    grown_mb = (process.memory_info().rss - before) / 2**20
    assert grown_mb < 300, grown_mb  # clients and servers together, in this one process
