"""The OpenAI Agents SDK's realtime agents through the relay, changing only the URL and the key.

The SDK drives a session its own way: a full ``session.update`` at the start and again at every
handoff (new instructions, tools and voice settings), tool calls answered with
``function_call_output`` items, audio from ``send_audio`` under semantic VAD. Every event it sends
must pass the relay's checks untouched, and its tools must run on arguments that fit them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner

from relay.simulator.audio import synthesize
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory, RelayHandle
from tests.support.sim_control import SimControl

CHUNK = 960  # 20 ms of PCM16 at 24 kHz


@pytest.fixture(params=["steady", "rotating"])
async def rig(
    request: pytest.FixtureRequest, start_relay: RelayFactory
) -> AsyncIterator[tuple[RelayHandle, SimControl]]:
    # "rotating": the live API's timing, and an upstream replaced every second, so the SDK's
    # retrieves and truncations meet answers the new upstream has only as replayed text.
    rotating = request.param == "rotating"
    timing = Timing.realistic() if rotating else Timing.fast()
    runner, port = await start_simulator(SimulatorConfig(timing=timing, speed=20.0))
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        rotate_after_s=1.0 if rotating else 0,
        rotate_jitter_s=0,
    )
    yield relay, SimControl(f"http://127.0.0.1:{port}")
    await runner.cleanup()


async def _until(check: Callable[[], Any], timeout: float = 15) -> Any:
    """What ``check`` returns once it is truthy (the SDK's events arrive in a reader task)."""
    async with asyncio.timeout(timeout):
        while not (found := check()):  # noqa: ASYNC110 (polls what the reader collects)
            await asyncio.sleep(0.02)
    return found


async def test_an_agent_with_a_tool_and_a_handoff(rig: tuple[RelayHandle, SimControl]) -> None:
    relay, sim = rig
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}."

    billing = RealtimeAgent(name="Billing", instructions="You handle billing questions.")
    greeter = RealtimeAgent(name="Greeter", instructions="Be brief.", tools=[get_weather], handoffs=[billing])
    runner = RealtimeRunner(
        starting_agent=greeter,
        config={
            "model_settings": {
                "model_name": "gpt-realtime",
                "voice": "alloy",
                "turn_detection": {"type": "semantic_vad", "interrupt_response": True},
            }
        },
    )
    session = await runner.run(
        model_config={
            "url": f"ws://127.0.0.1:{relay.server.port}/v1/realtime?model=gpt-realtime",
            "api_key": relay.token,
        }
    )
    events: list[Any] = []

    async def consume() -> None:
        async for event in session:
            events.append(event)

    async with session:
        reader = asyncio.create_task(consume())
        await session.send_message("What's the weather in Paris?")
        end = await _until(lambda: _first(events, "tool_end"))
        assert end.output == "Sunny in Paris."
        assert calls == ["Paris"]
        await _until(lambda: _first(events, "audio_end"))  # the answer after the tool's output

        await session.send_message("Please transfer me to billing.")
        handoff = await _until(lambda: _first(events, "handoff"))
        assert handoff.to_agent.name == "Billing"
        # The handoff's session.update reached the API: the session now has Billing's instructions.
        upstream = (await sim.sessions())[-1]
        async with asyncio.timeout(10):
            while True:
                config = (await sim.session(upstream["id"]))["config"]
                if "billing" in str(config["instructions"]):
                    break
                await asyncio.sleep(0.05)

        rotations = relay.metric("relay_upstream_replacements_total", {"cause": "rotation"})
        if relay.settings.rotate_after_s:  # the answers so far now live on as replayed text
            await _until(
                lambda: relay.metric("relay_upstream_replacements_total", {"cause": "rotation"}) > rotations
            )
        # A spoken question, as the SDK sends a microphone: raw PCM chunks, semantic VAD. The SDK
        # then retrieves its last answer to refresh its history.
        pcm = bytes(24 * 2 * 300) + synthesize("How much do I owe?", "pcm16") + bytes(24 * 2 * 900)
        audio_ends = sum(e.type == "audio_end" for e in events)
        for start in range(0, len(pcm), CHUNK):
            await session.send_audio(pcm[start : start + CHUNK])
        await _until(lambda: sum(e.type == "audio_end" for e in events) > audio_ends)
        assert any(
            e.type == "raw_model_event" and e.data.type == "input_audio_transcription_completed"
            for e in events
        )
        reader.cancel()

    history = [e for e in events if e.type == "history_updated"][-1].history  # the SDK's view
    answers = [i for i in history if getattr(i, "role", None) == "assistant"]
    assert len(answers) >= 3
    assert all(part.type == "audio" for i in answers for part in i.content), answers  # never text
    errors = [e for e in events if e.type == "error"]
    raw_errors = [e for e in events if e.type == "raw_model_event" and getattr(e.data, "type", "") == "error"]
    assert not errors, errors
    assert not raw_errors, raw_errors
    rejected = sum(
        sample.value
        for metric in relay.registry.collect()
        if metric.name == "relay_validation_rejections"
        for sample in metric.samples
        if sample.name == "relay_validation_rejections_total"
    )
    assert rejected == 0  # nothing the SDK sent was refused by the relay


def _first(events: list[Any], event_type: str) -> Any:
    return next((e for e in events if e.type == event_type), None)
