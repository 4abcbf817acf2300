"""The simulator against the real API: the SDK's event types over a mixed scenario, patch
semantics, and the official SDK as a client. (Recordings: test_recordings.py; errors: test_errors.py.)
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from relay.simulator.audio import synthesize
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
