"""The official openai SDK through the relay, changing only its base URL (issue: foundation)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory, RelayHandle


@pytest.fixture
async def relay(start_relay: RelayFactory) -> AsyncIterator[RelayHandle]:
    runner, port = await start_simulator(
        SimulatorConfig(timing=Timing.fast(), speed=50.0, reply_text="Hello from the relay.")
    )
    yield await start_relay(upstream="simulator", upstream_url=f"ws://127.0.0.1:{port}/v1/realtime")
    await runner.cleanup()


async def test_openai_sdk_full_turn_through_the_relay(relay: RelayHandle) -> None:
    client = AsyncOpenAI(api_key=relay.token, websocket_base_url=f"ws://127.0.0.1:{relay.server.port}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(
            session={"type": "realtime", "instructions": "Be brief.", "output_modalities": ["audio"]}
        )
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi!"}]}
        )
        await conn.response.create()
        seen: list[str] = []
        transcript = ""
        async for event in conn:
            seen.append(event.type)
            if event.type == "response.output_audio_transcript.delta":
                transcript += event.delta
            if event.type == "response.done":
                assert event.response.status == "completed"
                break
    expected = [
        "session.created",
        "session.updated",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    first_seen = [seen.index(t) for t in expected]
    assert first_seen == sorted(first_seen), seen
    assert transcript == "Hello from the relay."


async def test_sdk_gets_an_api_shaped_error_and_keeps_going(relay: RelayHandle) -> None:
    client = AsyncOpenAI(api_key=relay.token, websocket_base_url=f"ws://127.0.0.1:{relay.server.port}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.send({"type": "session.update", "session": {"type": "realtime", "modalities": ["text"]}})  # type: ignore[arg-type,typeddict-unknown-key]
        async for event in conn:
            if event.type == "error":
                assert event.error.code == "unknown_parameter"
                assert event.error.param == "session.modalities"
                assert "output_modalities" in event.error.message
                break
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        async for event in conn:
            if event.type == "session.updated":
                assert event.session.output_modalities == ["text"]  # type: ignore[union-attr]
                break
    assert relay.metric("relay_validation_rejections_total", {"code": "unknown_parameter"}) == 1
