"""The simulator's beta interface (and Azure's preview URL), for apps and relays still on beta."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
import websockets
from openai import AsyncOpenAI
from pydantic import TypeAdapter

from relay.simulator.audio import synthesize
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory
from tests.simulator.conftest import AUTH, SimClient, ws_url


async def test_sdk_beta_client_against_the_beta_interface() -> None:
    from openai.types.beta.realtime import RealtimeServerEvent

    adapter: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
    runner, port = await start_simulator(
        SimulatorConfig(timing=Timing.fast(), interface="beta", speed=50.0, reply_text="Hi!")
    )
    client = AsyncOpenAI(api_key="k", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    seen: list[str] = []
    async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
        await conn.session.update(session={"modalities": ["text"], "input_audio_format": "g711_ulaw"})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}
        )
        await conn.response.create()
        async for event in conn:
            adapter.validate_python(event.model_dump(exclude_unset=True))
            seen.append(event.type)
            if event.type == "session.updated":
                assert event.session.input_audio_format == "g711_ulaw"
            if event.type == "response.done":
                break
    await runner.cleanup()
    assert {
        "session.created",
        "conversation.item.created",
        "response.text.delta",
        "response.text.done",
    } <= set(seen)
    assert not any(t.startswith(("response.output_text", "response.output_audio")) for t in seen)


async def test_relay_passes_beta_clients_through_to_an_azure_preview_upstream(
    start_relay: RelayFactory,
) -> None:
    runner, port = await start_simulator(
        SimulatorConfig(timing=Timing.fast(), interface="azure-preview", speed=50.0, reply_text="Hi!")
    )
    relay = await start_relay(
        upstream="azure",
        upstream_url=f"ws://127.0.0.1:{port}/openai/realtime",
        azure_openai_api_key="azure-key",
        azure_api_version="2025-04-01-preview",
        azure_openai_deployment="my-deployment",
    )
    headers = {**relay.auth, "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(relay.ws_url, additional_headers=headers) as ws:
        created = orjson.loads(await ws.recv())
        assert created["session"]["object"] == "realtime.session"
        await ws.send('{"type":"session.update","session":{"modalities":["text"],"bogus":1}}')
        error = orjson.loads(await ws.recv())
        assert (error["error"]["code"], error["error"]["param"]) == ("unknown_parameter", "session.bogus")
        await ws.send('{"type":"session.update","session":{"modalities":["text"]}}')
        assert orjson.loads(await ws.recv())["type"] == "session.updated"
    await runner.cleanup()
    pytest.importorskip("openai")


async def test_beta_scenario_speaks_beta_names_and_shapes() -> None:
    """Speech with server VAD, a tool round and a text answer, every event checked as beta."""
    runner, port = await start_simulator(
        SimulatorConfig(timing=Timing.fast(), interface="beta", speed=100.0, reply_text="Hi!")
    )
    headers = {**AUTH, "OpenAI-Beta": "realtime=v1"}
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    speech = synthesize("What is the weather like?", "pcm16")
    silence = bytes(48 * 800)
    try:
        async with websockets.connect(
            ws_url(port, "/v1/realtime?model=gpt-4o-realtime-preview"),
            additional_headers=headers,
            max_size=None,
        ) as ws:
            client = SimClient(ws, beta=True)
            await client.until("session.created")
            session = {"tools": [tool], "input_audio_transcription": {"model": "whisper-1"}}
            await client.send({"type": "session.update", "session": session})
            await client.until("session.updated")
            audio = base64.b64encode(silence + speech + silence).decode()
            await client.send({"type": "input_audio_buffer.append", "audio": audio})
            await client.until("response.done")
            await client.send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "get_weather in Rome"}],
                    },
                }
            )
            await client.send({"type": "response.create", "response": {"modalities": ["text"]}})
            await client.until_count("response.done", 2)
    finally:
        await runner.cleanup()
    kinds = {e["type"] for e in client.events}
    assert {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.committed",
        "conversation.item.created",
        "response.audio.delta",
        "response.audio_transcript.delta",
        "response.function_call_arguments.done",
    } <= kinds
    ga_only = (
        "response.output_text",
        "response.output_audio",
        "conversation.item.added",
        "conversation.item.done",
    )
    assert not [k for k in kinds if k.startswith(ga_only)]
