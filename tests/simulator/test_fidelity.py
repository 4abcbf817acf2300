"""The simulator against the real API: recorded event order, SDK types, the error catalogue."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import orjson
import pytest
import websockets
from pydantic import TypeAdapter

from relay.simulator.audio import synthesize
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from tests.simulator.conftest import SimClient


async def _scenario_events(sim: SimClient) -> list[dict[str, Any]]:
    await sim.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
                "audio": {"input": {"transcription": {"model": "whisper-1"}}},
            },
        }
    )
    await sim.until("session.updated")
    await sim.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "get_weather in Paris?"}],
            },
        }
    )
    await sim.send({"type": "response.create"})
    events = await sim.until("response.done")
    call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    await sim.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call["call_id"], "output": '{"sunny": true}'},
        }
    )
    await sim.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    await sim.until("response.done")
    speech = synthesize("Hello there, how are you today?", "pcm16")
    silence = np.zeros(24 * 800, dtype="<i2").tobytes()
    await sim.send(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(silence + speech + silence).decode()}
    )
    await sim.until("response.done")
    await sim.send({"type": "input_audio_buffer.commit"})
    await sim.until("error")
    return sim.events


async def test_every_emitted_event_parses_as_the_sdk_server_event_type(sim: SimClient) -> None:
    from openai.types.realtime import RealtimeServerEvent

    adapter: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
    events = await _scenario_events(sim)
    kinds = {e["type"] for e in events}
    assert {
        "response.function_call_arguments.done",
        "response.output_audio.delta",
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.completed",
        "response.output_text.delta",
        "error",
    } <= kinds
    for event in events:
        parsed = adapter.validate_python(event)
        assert parsed.type == event["type"]


CATALOGUE = [
    (
        {"type": "session.update", "session": {"type": "realtime", "bogus_field": 1}},
        "unknown_parameter",
        "session.bogus_field",
        "Unknown parameter: 'session.bogus_field'.",
    ),
    ({"type": "nope"}, "invalid_value", "type", "Invalid value: 'nope'. Supported values are:"),
    (
        {"type": "session.update", "session": {"instructions": "x"}},
        "missing_required_parameter",
        "session.type",
        "Missing required parameter: 'session.type'.",
    ),
    (
        {"type": "input_audio_buffer.commit"},
        "input_audio_buffer_commit_empty",
        None,
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
        "but buffer only has 0.00ms of audio.",
    ),
    (
        {"type": "response.cancel"},
        "response_cancel_not_active",
        None,
        "Cancellation failed: no active response found",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {
                "id": "x" * 39,
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        },
        "string_above_max_length",
        "item.id",
        "Invalid 'item.id': string too long. Expected a string with maximum length 32, but got a string "
        "with length 39 instead.",
    ),
    (
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": "pcm16"}}}},
        "invalid_type",
        "session.audio.input.format",
        "Invalid type for 'session.audio.input.format': expected an object, but got a string instead.",
    ),
]


@pytest.mark.parametrize(("event", "code", "param", "message"), CATALOGUE, ids=lambda x: str(x)[:30])
async def test_catalogue_errors(
    sim: SimClient, event: dict[str, Any], code: str, param: str | None, message: str
) -> None:
    await sim.send({**event, "event_id": "evt_cat"})
    error = (await sim.until("error"))[-1]["error"]
    assert (error["code"], error["param"], error["event_id"]) == (code, param, "evt_cat")
    assert error["message"].startswith(message)


async def test_transport_level_errors(sim: SimClient) -> None:
    await sim.ws.send("{not json")
    error = (await sim.until("error"))[-1]["error"]
    assert error["code"] == "invalid_json"
    assert error["message"].startswith("Invalid event: failed to parse JSON value.")
    await sim.ws.send(b"\x00binary")
    error = (await sim.until("error"))[-1]["error"]
    assert (error["code"], error["message"]) == (
        "invalid_event",
        "Expected a text WebSocket message; binary frames are not supported.",
    )
    await sim.ws.send('{"event_id": "e9"}')
    error = (await sim.until("error"))[-1]["error"]
    assert (error["code"], error["message"], error["event_id"]) == (
        "invalid_event",
        "The 'type' field is missing.",
        "e9",
    )
    await sim.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
            },
        }
    )
    error = (await sim.until("error"))[-1]["error"]
    assert (error["code"], error["param"]) == ("integer_below_min_value", "session.audio.input.format.rate")
    assert "Expected a value >= 24000" in error["message"]


async def test_session_expiry_like_the_api() -> None:
    runner, port = await start_simulator(SimulatorConfig(session_max_s=0.5))
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer k"}) as ws:
        await ws.recv()
        error = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert error["error"]["code"] == "session_expired"
    assert error["error"]["message"] == "Your session hit the maximum duration of 0 minutes."
    assert ws.close_code == 1001
    await runner.cleanup()


async def test_stateful_errors(sim: SimClient) -> None:
    await sim.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * 2400).decode()})
    await sim.send({"type": "input_audio_buffer.commit"})
    error = (await sim.until("error"))[-1]["error"]
    assert error["message"].endswith("buffer only has 50.00ms of audio.")
    await sim.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "a long question"}],
            },
        }
    )
    await sim.send({"type": "response.create"})
    await sim.send({"type": "response.create"})
    error = (await sim.until("error"))[-1]["error"]
    assert error["code"] == "conversation_already_has_active_response"
    done = (await sim.until("response.done"))[-1]
    assert done["response"]["status"] == "completed"
    await sim.send(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "ash"}}}}
    )
    error = (await sim.until("error"))[-1]["error"]
    assert error["code"] == "cannot_update_voice"
    await sim.send({"type": "conversation.item.delete", "item_id": "item_missing"})
    assert (await sim.until("error"))[-1]["error"]["param"] == "item_id"


async def test_patch_semantics(sim: SimClient) -> None:
    await sim.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "A",
                "tools": [{"type": "function", "name": "f"}],
                "audio": {"input": {"noise_reduction": {"type": "near_field"}}},
            },
        }
    )
    first = (await sim.until("session.updated"))[-1]["session"]
    await sim.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "tools": [], "audio": {"input": {"turn_detection": None}}},
        }
    )
    second = (await sim.until("session.updated"))[-1]["session"]
    assert second["instructions"] == "A"  # untouched fields stay
    assert second["tools"] == []  # arrays replace whole
    assert second["audio"]["input"]["noise_reduction"] == {"type": "near_field"}  # siblings merge
    assert second["audio"]["input"]["turn_detection"] is None  # null clears
    assert first["audio"]["input"]["turn_detection"]["type"] == "server_vad"


async def test_auth_and_model_failures_close_like_the_api(sim_port: int) -> None:
    base = f"ws://127.0.0.1:{sim_port}/v1/realtime"
    cases = [
        (base + "?model=gpt-realtime", {}, 3000, None),
        (base, {"Authorization": "Bearer k"}, 4000, "missing_model"),
        (base + "?model=gpt-nope", {"Authorization": "Bearer k"}, 4000, "invalid_model"),
        (
            base + "?model=gpt-realtime",
            {"Authorization": "Bearer k", "OpenAI-Beta": "realtime=v1"},
            4000,
            "beta_api_shape_disabled",
        ),
    ]
    for url, headers, close, code in cases:
        async with websockets.connect(url, additional_headers=headers) as ws:
            event = orjson.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert (event["error"]["code"], ws.close_code) == (code, close)


async def test_official_sdk_talks_to_the_simulator(sim_port: int) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="k", websocket_base_url=f"ws://127.0.0.1:{sim_port}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
        )
        await conn.response.create()
        seen = []
        async for event in conn:
            seen.append(event.type)
            if event.type == "response.done":
                break
    assert "response.output_text.delta" in seen
