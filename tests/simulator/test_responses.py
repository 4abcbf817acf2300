"""Responses: real audio in the output format, limits, out-of-band context, tools, idle turns, pings."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from relay.simulator.audio import bytes_per_ms, synthesize
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.simulator.conftest import AUTH, SimClient, ws_url
from tests.support.sim_control import SimControl


def _user_text(text: str) -> dict[str, Any]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return {"type": "conversation.item.create", "item": item}


def _update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "realtime", **session}}


@pytest.mark.parametrize(
    ("fmt", "encoding"),
    [
        ({"type": "audio/pcm", "rate": 24000}, "pcm16"),
        ({"type": "audio/pcmu"}, "pcmu"),
        ({"type": "audio/pcma"}, "pcma"),
    ],
)
async def test_audio_deltas_are_the_spoken_reply_in_the_output_format(
    sim: SimClient, fmt: dict[str, Any], encoding: str
) -> None:
    await sim.send(_update(audio={"output": {"format": fmt}}))
    await sim.until("session.updated")
    await sim.send(_user_text("hello"))
    await sim.send({"type": "response.create"})
    events = await sim.until("response.done")
    chunks = [base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"]
    assert b"".join(chunks) == synthesize("Hi there!", encoding)  # type: ignore[arg-type]
    assert {len(c) for c in chunks[:-1]} == {100 * bytes_per_ms(encoding)}  # 100 ms chunks
    transcript = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert transcript == "Hi there!"
    assert all(e["obfuscation"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    done = events[-1]["response"]
    assert done["audio"]["output"]["format"] == fmt
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": "Hi there!"}]


async def test_max_output_tokens_makes_the_response_incomplete(sim: SimClient, sim_port: int) -> None:
    await SimControl(f"http://127.0.0.1:{sim_port}").script(replies=["one two three four five six"])
    await sim.send(_user_text("count"))
    await sim.send(
        {"type": "response.create", "response": {"output_modalities": ["text"], "max_output_tokens": 4}}
    )
    done = (await sim.until("response.done"))[-1]["response"]
    assert (done["status"], done["status_details"]) == (
        "incomplete",
        {"type": "incomplete", "reason": "max_output_tokens"},
    )
    assert done["output"][0]["content"][0]["text"] == "one two"
    assert done["output"][0]["status"] == "incomplete"


async def test_out_of_band_response_uses_its_input_and_leaves_the_conversation(
    sim: SimClient, sim_port: int
) -> None:
    from relay.simulator.server import start_simulator as _start  # a simulator without a fixed reply

    runner, port = await _start(SimulatorConfig(timing=Timing.fast(), speed=100.0))
    try:
        import websockets

        async with websockets.connect(ws_url(port), additional_headers=AUTH) as ws:
            client = SimClient(ws)
            session_id = (await client.until("session.created"))[-1]["session"]["id"]
            await client.send(_user_text("in the conversation"))
            item = _user_text("only for this response")["item"]
            response = {"conversation": "none", "input": [item], "output_modalities": ["text"]}
            await client.send({"type": "response.create", "response": response})
            events = await client.until("response.done")
            state = await SimControl(f"http://127.0.0.1:{port}").session(session_id)
    finally:
        await runner.cleanup()
    done = events[-1]["response"]
    assert done["conversation_id"] is None
    assert done["output"][0]["content"][0]["text"] == "You said: only for this response."
    assert "conversation.item.added" not in [e["type"] for e in events[2:]]
    assert len(state["conversation"]) == 1


async def test_a_tool_round_trip(sim: SimClient, sim_port: int) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    await sim.send(_update(tools=[tool], output_modalities=["text"]))
    await sim.until("session.updated")
    await sim.send(_user_text("What is the weather? Use get_weather."))
    await sim.send({"type": "response.create"})
    first = await sim.until("response.done")
    call = first[-1]["response"]["output"][0]
    assert (call["type"], call["name"], call["arguments"], call["status"]) == (
        "function_call",
        "get_weather",
        "{}",
        "completed",
    )
    arguments = "".join(e["delta"] for e in first if e["type"] == "response.function_call_arguments.delta")
    assert arguments == "{}"
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    await sim.send({"type": "conversation.item.create", "item": output})
    await sim.send({"type": "response.create"})
    second = (await sim.until("response.done"))[-1]["response"]["output"][0]
    assert (second["type"], second["role"]) == ("message", "assistant")


async def test_no_tool_call_when_the_user_does_not_ask_or_choice_is_none(sim: SimClient) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    await sim.send(_update(tools=[tool], output_modalities=["text"]))
    await sim.until("session.updated")
    await sim.send(_user_text("Tell me a joke."))
    await sim.send({"type": "response.create"})
    assert (await sim.until("response.done"))[-1]["response"]["output"][0]["type"] == "message"
    await sim.send(_user_text("weather please"))
    await sim.send({"type": "response.create", "response": {"tool_choice": "none"}})
    assert (await sim.until("response.done"))[-1]["response"]["output"][0]["type"] == "message"


async def test_idle_timeout_commits_and_responds(sim: SimClient) -> None:
    detection = {"type": "server_vad", "idle_timeout_ms": 5000}
    await sim.send(_update(output_modalities=["text"], audio={"input": {"turn_detection": detection}}))
    await sim.until("session.updated")
    silence = base64.b64encode(bytes(48 * 1000)).decode()
    for _ in range(6):
        await sim.send({"type": "input_audio_buffer.append", "audio": silence})
    events = await sim.until("response.done")
    kinds = [e["type"] for e in events]
    timeout = events[kinds.index("input_audio_buffer.timeout_triggered")]
    assert (timeout["audio_start_ms"], timeout["audio_end_ms"]) == (0, 5000)
    committed = events[kinds.index("input_audio_buffer.committed")]
    assert committed["item_id"] == timeout["item_id"]
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")


async def test_server_pings_the_client() -> None:
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), ping_interval_s=0.2))
    pings = 0
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(ws_url(port), headers=AUTH, autoping=False) as ws,
        ):
            while pings < 2:
                message = await ws.receive(timeout=10)
                if message.type is aiohttp.WSMsgType.PING:
                    pings += 1
                    await ws.pong(message.data)
            assert not ws.closed
    finally:
        await runner.cleanup()
    assert pings == 2
