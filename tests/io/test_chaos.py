"""Seeded chaos: many concurrent conversations, random upstream failures, frequent rotations.

Each conversation mixes text turns, spoken turns (server VAD on synthetic speech) and tool
rounds while the simulator (with the live API's timing) drops, closes or expires its upstream
at random moments and the relay rotates every couple of seconds. Every conversation must finish,
with the client-visible invariants intact and the final upstream holding the whole conversation in order.
Bounded for CI; RELAY_CHAOS_SESSIONS / RELAY_CHAOS_SEED run it bigger or differently.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
from typing import Any

import aiohttp
import numpy as np
import pytest

from relay.simulator.audio import synthesize
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory
from tests.support.conversation import RecordingClient, text_item
from tests.support.sim_control import SimControl

SESSIONS = int(os.environ.get("RELAY_CHAOS_SESSIONS", "50"))
SEED = int(os.environ.get("RELAY_CHAOS_SEED", "20261124"))
FAULTS = [
    {"kind": "drop"},
    {"kind": "close", "code": 1000},
    {"kind": "close", "code": 1011},
    {"kind": "close", "code": 1001, "reason": "session_expired"},
]
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
SPEECH = base64.b64encode(
    np.zeros(24 * 400, dtype="<i2").tobytes()
    + synthesize("Tell me something nice.", "pcm16")
    + np.zeros(24 * 700, dtype="<i2").tobytes()
).decode()


async def _conversation(index: int, relay_url: str, token: str, sim: SimControl, rng: random.Random) -> None:
    client = await RecordingClient.connect(relay_url, token)
    await client.wait_for("session.created")
    await client.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "tools": [TOOL], "instructions": f"conversation {index}"},
        }
    )
    await client.wait_for("session.updated")
    faults: list[asyncio.Task[None]] = []
    for turn in range(4):
        kind = rng.choice(["text", "text", "speech", "tool"])
        if rng.random() < 0.5:
            delay, fault = rng.uniform(0.0, 0.3), dict(rng.choice(FAULTS))
            faults.append(asyncio.create_task(_fire(sim, client.relay_session, fault, delay)))
        start = len(client.events)
        if kind == "speech":
            await client.send({"type": "input_audio_buffer.append", "audio": SPEECH})
        else:
            text = "what is the get_weather" if kind == "tool" else f"turn {turn} of {index}"
            await client.send(text_item(text))
            await client.send({"type": "response.create"})
        done = await client.wait_for("response.done", after=start, timeout=30)
        if kind == "tool" and done["response"]["status"] == "completed":
            call = next((i for i in done["response"]["output"] if i["type"] == "function_call"), None)
            if call is not None:
                start = len(client.events)
                await client.send(
                    {
                        "type": "conversation.item.create",
                        "item": {"type": "function_call_output", "call_id": call["call_id"], "output": "{}"},
                    }
                )
                await client.send({"type": "response.create"})
                await client.wait_for("response.done", after=start, timeout=30)
        await asyncio.sleep(rng.uniform(0.05, 0.4))
    await asyncio.gather(*faults)
    await asyncio.sleep(0.5)
    client.assert_invariants()
    # Nothing of the upstreams' ends shows: no expiry notice, no error of the relay's replays.
    assert "error" not in client.types(), [e for e in client.events if e["type"] == "error"][:2]
    for _ in range(100):  # the newest upstream may be a rotation's, still mid-replay
        final = await sim.open_session(client.relay_session)
        if final["config"]["instructions"] == f"conversation {index}":
            break
        await asyncio.sleep(0.05)
    assert final["config"]["instructions"] == f"conversation {index}"
    texts = [p.get("text") for i in final["conversation"] for p in i.get("content") or [] if p.get("text")]
    turns = [t for t in texts if t.startswith("turn ")]
    assert turns == sorted(turns, key=lambda t: int(t.split()[1])), turns  # order survived every replay
    await client.close()


async def _fire(sim: SimControl, relay_session: str, fault: dict[str, Any], delay: float) -> None:
    await asyncio.sleep(delay)
    sessions = [s for s in await sim.sessions(relay_session) if s["open"]]
    if sessions:
        # The session may close meanwhile (a rotation won the race): the simulator answers 404.
        with contextlib.suppress(aiohttp.ClientResponseError):
            await sim.fault(sessions[-1]["id"], **fault)


@pytest.mark.slow
async def test_chaos(start_relay: RelayFactory) -> None:
    config = SimulatorConfig(speed=20.0, reply_text="Sure, here you go.", timing=Timing.realistic())
    runner, port = await start_simulator(config)
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        rotate_after_s=2.0,
        rotate_jitter_s=1.0,
        rotate_quiet_max_wait_s=2.0,
        reconnect_base_delay_s=0.05,
        reconnect_max_delay_s=0.5,
        max_sessions_per_identity=1000,
    )
    sim = SimControl(f"http://127.0.0.1:{port}")
    rng = random.Random(SEED)
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    _conversation(i, relay.ws_url, relay.token, sim, random.Random(rng.random()))
                    for i in range(SESSIONS)
                )
            ),
            timeout=240,
        )
    finally:
        await runner.cleanup()
    replaced = sum(
        relay.metric("relay_upstream_replacements_total", {"cause": c})
        for c in ("rotation", "1000", "1001", "1006", "1011")
    )
    assert replaced >= SESSIONS / 2, replaced
    print(f"\nchaos: {SESSIONS} conversations, {replaced:.0f} upstream replacements, seed {SEED}")


@pytest.mark.slow
async def test_a_conversation_lives_through_twenty_rotations(start_relay: RelayFactory) -> None:
    runner, port = await start_simulator(SimulatorConfig(speed=50.0, timing=Timing.realistic()))
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        rotate_after_s=0.5,
        rotate_jitter_s=0.0,
    )
    sim = SimControl(f"http://127.0.0.1:{port}")
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    await client.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "instructions": "long life", "output_modalities": ["text"]},
        }
    )
    await client.wait_for("session.updated")
    turns = 0
    while relay.metric("relay_upstream_replacements_total", {"cause": "rotation"}) < 20:
        assert turns < 60, "twenty rotations should take far fewer turns"
        start = len(client.events)
        await client.send(text_item(f"turn {turns}"))
        await client.send({"type": "response.create"})
        await client.wait_for("response.done", after=start)
        turns += 1
        await asyncio.sleep(0.3)
    for _ in range(100):  # the newest upstream may still be a rotation's, mid-replay: wait for it
        final = await sim.open_session(client.relay_session)
        users = [i["content"][0]["text"] for i in final["conversation"] if i.get("role") == "user"]
        if len(final["conversation"]) == 2 * turns:
            break
        await asyncio.sleep(0.05)
    assert final["config"]["instructions"] == "long life"
    assert users == [f"turn {t}" for t in range(turns)]
    assert len(final["conversation"]) == 2 * turns
    client.assert_invariants()
    await client.close()
    await runner.cleanup()


TRANSCRIPTION_SESSION = {
    "type": "session.update",
    "session": {
        "type": "transcription",
        "audio": {"input": {"turn_detection": None, "transcription": {"model": "gpt-4o-transcribe"}}},
    },
}
UTTERANCE = base64.b64encode(synthesize("Please add milk to the shopping list.", "pcm16")).decode()
COMPLETED = "conversation.item.input_audio_transcription.completed"


async def _captions(relay_url: str, token: str, sim: SimControl, rng: random.Random, count: int) -> None:
    """One transcription app: ``count`` utterances, the upstream failing every couple of seconds."""
    client = await RecordingClient.connect(relay_url + "?intent=transcription", token)
    await client.wait_for("session.created")
    await client.send(TRANSCRIPTION_SESSION)
    await client.wait_for("session.updated")
    for _ in range(count):
        await client.send({"type": "input_audio_buffer.clear"})
        for start in range(0, len(UTTERANCE), 6400):  # 200 ms appends
            await client.send({"type": "input_audio_buffer.append", "audio": UTTERANCE[start : start + 6400]})
        await client.send({"type": "input_audio_buffer.commit"})
        if rng.random() < 0.25:
            await _fire(sim, client.relay_session, dict(rng.choice(FAULTS)), 0.0)
        await asyncio.sleep(rng.uniform(0.1, 0.4))
    async with asyncio.timeout(60):
        while client.types().count(COMPLETED) < count:  # noqa: ASYNC110 (counted, not awaited)
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    committed = [e["item_id"] for e in client.events if e["type"] == "input_audio_buffer.committed"]
    completed = [e["item_id"] for e in client.events if e["type"] == COMPLETED]
    assert len(committed) == count
    assert completed == committed  # each utterance transcribed once, under its id, in order
    assert "error" not in client.types()
    await client.close()


@pytest.mark.slow
async def test_transcription_through_chaos(start_relay: RelayFactory) -> None:
    """Dozens of utterances per app while the upstream drops, closes or expires every few seconds
    (field failure F3: a transcription session dying with 1006 after 5-15 minutes)."""
    runner, port = await start_simulator(SimulatorConfig(speed=20.0, timing=Timing.realistic()))
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        rotate_after_s=3.0,
        reconnect_base_delay_s=0.05,
        reconnect_max_delay_s=0.5,
    )
    sim = SimControl(f"http://127.0.0.1:{port}")
    rng = random.Random(SEED)
    try:
        await asyncio.gather(
            *(_captions(relay.ws_url, relay.token, sim, random.Random(rng.random()), 30) for _ in range(5))
        )
    finally:
        await runner.cleanup()
    replaced = sum(
        relay.metric("relay_upstream_replacements_total", {"cause": c})
        for c in ("rotation", "1000", "1001", "1006", "1011")
    )
    assert replaced >= 10, replaced
    print(f"\ntranscription chaos: 5 apps x 30 utterances, {replaced:.0f} upstream replacements")
