"""Apps still on the beta interface, through the relay to a GA upstream (the simulator in GA mode)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest
import websockets
from openai import AsyncOpenAI
from pydantic import TypeAdapter

from relay.core.protocol import Interface
from relay.core.validation import Validator
from relay.simulator.audio import synthesize
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory, RelayHandle
from tests.support.sim_control import SimControl


@pytest.fixture
async def rig(start_relay: RelayFactory) -> AsyncIterator[tuple[RelayHandle, SimControl]]:
    runner, port = await start_simulator(
        SimulatorConfig(timing=Timing.fast(), speed=50.0, transcript_text="What is the weather?")
    )
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        reconnect_base_delay_s=0.05,
        rotate_after_s=1.0,
        rotate_jitter_s=0.0,
    )
    yield relay, SimControl(f"http://127.0.0.1:{port}")
    await runner.cleanup()


def _beta_adapter() -> TypeAdapter[Any]:
    from openai.types.beta.realtime import RealtimeServerEvent

    return TypeAdapter(RealtimeServerEvent)


async def test_beta_sdk_text_audio_and_tool_turns(rig: tuple[RelayHandle, SimControl]) -> None:
    relay, sim = rig
    client = AsyncOpenAI(api_key=relay.token, websocket_base_url=f"ws://127.0.0.1:{relay.server.port}/v1")
    adapter = _beta_adapter()
    received: list[dict[str, Any]] = []

    async def until(conn: Any, kind: str) -> dict[str, Any]:
        async for event in conn:
            raw = event.model_dump(exclude_unset=True)
            adapter.validate_python(raw)  # every event parses as the SDK's beta types
            received.append(raw)
            if event.type == "error":
                raise AssertionError(raw)
            if event.type == kind:
                return raw
        raise AssertionError("closed")

    async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
        await until(conn, "session.created")
        await conn.session.update(
            session={
                "modalities": ["audio", "text"],
                "voice": "alloy",
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                "input_audio_transcription": {"model": "whisper-1"},
                "temperature": 0.8,
                "tools": [
                    {
                        "type": "function",
                        "name": "get_weather",
                        "description": "Weather",
                        "parameters": {"type": "object", "properties": {}},
                    }
                ],
            }
        )
        updated = await until(conn, "session.updated")
        assert updated["session"]["input_audio_format"] == "pcm16"
        assert updated["session"]["modalities"] == ["audio", "text"]
        # A text turn.
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}
        )
        await conn.response.create()
        done = await until(conn, "response.done")
        assert done["response"]["status"] == "completed"
        assert {"response.audio.delta", "response.audio_transcript.delta", "conversation.item.created"} <= {
            e["type"] for e in received
        }
        # A spoken turn: server VAD on real audio.
        silence = np.zeros(24 * 500, dtype="<i2").tobytes()
        audio = silence + synthesize("What is the weather today?", "pcm16") + silence * 2
        await conn.input_audio_buffer.append(audio=base64.b64encode(audio).decode())
        await until(conn, "input_audio_buffer.speech_started")
        call = await until(conn, "response.function_call_arguments.done")
        await until(conn, "response.done")
        # The tool round.
        await conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": call["call_id"], "output": '{"sunny": true}'}
        )
        await conn.response.create()
        done = await until(conn, "response.done")
        assert done["response"]["status"] == "completed"
    ga_types = set()
    for session in await sim.sessions():
        detail = await sim.session(session["id"])
        ga_types.update(detail["received_types"])
        for raw in detail["received"]:
            if len(raw) < 2000:  # the simulator keeps the first 2000 characters of each frame
                Validator(Interface.GA).check(orjson.loads(raw))  # the upstream saw only valid GA events
    assert "transcription_session.update" not in ga_types
    assert relay.metric("relay_beta_dropped_fields_total", {"field": "session.temperature"}) == 1


async def test_beta_client_survives_a_drop_and_a_rotation(rig: tuple[RelayHandle, SimControl]) -> None:
    relay, sim = rig
    headers = {"Authorization": f"Bearer {relay.token}", "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(relay.ws_url, additional_headers=headers) as ws:
        created = orjson.loads(await ws.recv())
        assert created["session"]["object"] == "realtime.session"
        assert "modalities" in created["session"]
        assert "audio" not in created["session"]
        relay_session = ws.response.headers["X-Relay-Session-Id"]
        upstream = await sim.open_session(relay_session)
        await sim.fault(upstream["id"], kind="drop")
        await asyncio.sleep(1.6)  # and a proactive rotation (1 s)
        await ws.send(
            orjson.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "Still there?"}],
                    },
                }
            ).decode()
        )
        await ws.send('{"type":"response.create","response":{"modalities":["text"]}}')
        types = []
        while True:
            event = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            types.append(event["type"])
            if event["type"] == "response.done":
                break
    assert "response.text.delta" in types
    assert "session.created" not in types  # still one session, for the client
    assert len(await sim.sessions(relay_session)) >= 3


async def test_reject_policy_answers_like_the_api(start_relay: RelayFactory) -> None:
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast()))
    relay = await start_relay(
        upstream="simulator", upstream_url=f"ws://127.0.0.1:{port}/v1/realtime", beta_clients="reject"
    )
    headers = {"Authorization": f"Bearer {relay.token}", "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(relay.ws_url, additional_headers=headers) as ws:
        event = orjson.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert event["error"] == {
        "type": "invalid_request_error",
        "code": "beta_api_shape_disabled",
        "message": "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
        "param": None,
        "event_id": None,
    }
    assert (ws.close_code, ws.close_reason) == (4000, "invalid_request_error.beta_api_shape_disabled")
    await runner.cleanup()


async def test_a_beta_transcription_client_through_the_relay(rig: tuple[RelayHandle, SimControl]) -> None:
    """A beta app's transcription session (``intent=transcription``, ``transcription_session.update``)
    keeps working against a GA upstream: its update is translated, the answers come back in its
    shapes, and every committed utterance is transcribed under the id the app was given."""
    relay, _ = rig
    headers = {"Authorization": f"Bearer {relay.token}", "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(relay.ws_url + "?intent=transcription", additional_headers=headers) as ws:

        async def until(kind: str) -> dict[str, Any]:
            async with asyncio.timeout(10):
                while True:
                    event = orjson.loads(await ws.recv())
                    assert event["type"] != "error", event
                    if event["type"] == kind:
                        return dict(event)

        created = await until("transcription_session.created")
        assert created["session"]["object"] == "realtime.transcription_session"
        update = {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                "turn_detection": None,
            },
        }
        await ws.send(orjson.dumps(update).decode())
        updated = await until("transcription_session.updated")
        assert updated["session"]["input_audio_transcription"]["model"] == "gpt-4o-transcribe"
        audio = synthesize("What is the weather?", "pcm16")
        await ws.send(
            orjson.dumps(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}
            ).decode()
        )
        await ws.send('{"type":"input_audio_buffer.commit"}')
        committed = await until("input_audio_buffer.committed")
        completed = await until("conversation.item.input_audio_transcription.completed")
        assert completed["item_id"] == committed["item_id"]
        assert completed["transcript"] == "What is the weather?"
