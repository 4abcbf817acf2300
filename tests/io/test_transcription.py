"""Transcription sessions through the relay (field failure F3): ``?intent=transcription``, the
report's exact flow (the app's own VAD: clear, appends, commit per utterance), and not one
utterance lost whatever the upstream does: a drop mid-append, between a commit and its transcript,
mid-transcript, the duration cap, rotations. Against the simulator with the live API's timing.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from relay.simulator.audio import synthesize
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory, RelayHandle
from tests.support.conversation import RecordingClient
from tests.support.sim_control import SimControl

pytestmark = pytest.mark.slow
UTTERANCES = ("Turn on the lights.", "What time is it in Lisbon?", "Play some jazz.", "Thank you.")
CHUNK = 960  # 20 ms
SESSION = {
    "type": "session.update",
    "session": {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": None,
                "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": "home assistant"},
                "noise_reduction": {"type": "near_field"},
            }
        },
        "include": ["item.input_audio_transcription.logprobs"],
    },
}
# What a transcription app may see: nothing of the replacements, nothing of the relay.
ALLOWED = {
    "session.created",
    "session.updated",
    "input_audio_buffer.cleared",
    "input_audio_buffer.committed",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
}
COMPLETED = "conversation.item.input_audio_transcription.completed"


@dataclass
class Rig:
    relay: RelayHandle
    sim: SimControl


async def _rig(start_relay: RelayFactory, config: SimulatorConfig, **settings: Any) -> AsyncIterator[Rig]:
    runner, port = await start_simulator(config)
    settings.setdefault("rotate_after_s", 0)
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        reconnect_base_delay_s=0.05,
        reconnect_max_delay_s=0.5,
        **settings,
    )
    yield Rig(relay, SimControl(f"http://127.0.0.1:{port}"))
    await runner.cleanup()


async def _utterance(client: RecordingClient, text: str, on_half: Any = None) -> None:
    audio = synthesize(text, "pcm16")
    await client.send({"type": "input_audio_buffer.clear"})
    half = len(audio) // 2 // CHUNK * CHUNK
    for start in range(0, len(audio), CHUNK):
        if start == half and on_half is not None:
            await on_half()
        chunk = base64.b64encode(audio[start : start + CHUNK]).decode()
        await client.send({"type": "input_audio_buffer.append", "audio": chunk})
    await client.send({"type": "input_audio_buffer.commit"})


async def _check_every_utterance_transcribed_once_in_order(client: RecordingClient) -> None:
    async with asyncio.timeout(20):
        while client.types().count(COMPLETED) < len(UTTERANCES):  # noqa: ASYNC110 (counted)
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # nothing more must come
    committed = [e["item_id"] for e in client.events if e["type"] == "input_audio_buffer.committed"]
    completed = [e["item_id"] for e in client.events if e["type"] == COMPLETED]
    assert len(committed) == len(UTTERANCES)
    assert completed == committed  # exactly one transcript each, under the id the app got, in order
    deltas = {e["item_id"] for e in client.events if e["type"].endswith("transcription.delta")}
    assert deltas <= set(committed)  # no id the app did not get from a committed event
    assert set(client.types()) <= ALLOWED, set(client.types()) - ALLOWED
    assert client.types().count("session.created") == 1


async def _connect(rig: Rig) -> RecordingClient:
    client = await RecordingClient.connect(rig.relay.ws_url + "?intent=transcription", rig.relay.token)
    created = await client.wait_for("session.created")
    assert created["session"]["type"] == "transcription"
    await client.send(SESSION)
    await client.wait_for("session.updated")
    return client


PHASES = ["no-fault", "mid-append", "after-commit", "mid-transcript", "expiry", "cap", "rotation"]


@pytest.mark.parametrize("phase", PHASES)
async def test_the_reports_flow_loses_no_utterance(start_relay: RelayFactory, phase: str) -> None:
    # "cap": sessions announced to expire after 2 s; the relay must move on before the cap.
    config = SimulatorConfig(
        timing=Timing.realistic(), speed=20.0, session_max_s=2.0 if phase == "cap" else 3600
    )
    settings = {"rotate_after_s": 1.5, "rotate_jitter_s": 0} if phase == "rotation" else {}
    async for rig in _rig(start_relay, config, **settings):
        client = await _connect(rig)
        upstream = await rig.sim.open_session(client.relay_session)

        async def drop(sim: SimControl = rig.sim, session_id: str = upstream["id"]) -> None:
            await sim.fault(session_id, kind="drop")

        # Between the old upstream's committed and its transcript: dropped, or expired.
        after_commit = {"after_event": "input_audio_buffer.committed", "count": 2}
        if phase == "after-commit":
            await rig.sim.fault(upstream["id"], kind="drop", **after_commit)
        elif phase == "expiry":
            await rig.sim.fault(
                upstream["id"], kind="close", code=1001, reason="session_expired", **after_commit
            )
        elif phase == "mid-transcript":
            mid = {"after_event": "conversation.item.input_audio_transcription.delta", "count": 3}
            await rig.sim.fault(upstream["id"], kind="drop", **mid)
        for index, text in enumerate(UTTERANCES):
            await _utterance(client, text, on_half=drop if phase == "mid-append" and index == 1 else None)
            await asyncio.sleep(0.6 if phase in ("cap", "rotation") else 0.05)
        await _check_every_utterance_transcribed_once_in_order(client)
        causes = ("rotation", "1000", "1001", "1006", "1011")
        replaced = sum(rig.relay.metric("relay_upstream_replacements_total", {"cause": c}) for c in causes)
        if phase != "no-fault":
            assert replaced >= 1, "the fault did not happen: the test would prove nothing"
        hidden = rig.relay.metric("relay_upstream_events_hidden_total", {"reason": "session_expired"})
        assert hidden == (1 if phase == "expiry" else 0)  # the cap itself is never reached
        await client.close()


async def test_the_wrong_kind_of_event_is_answered_by_the_relay_with_the_intent_to_use(
    start_relay: RelayFactory,
) -> None:
    """A transcription update on a realtime session (the report's first failure through the
    relay) and a response on a transcription session never reach the API: the relay answers with
    the API's error and says which URL to use. The allowlist of transcription models holds too."""
    async for rig in _rig(
        start_relay, SimulatorConfig(timing=Timing.fast()), allowed_transcription_models=["gpt-4o-transcribe"]
    ):
        realtime = await RecordingClient.connect(rig.relay.ws_url + "?model=gpt-realtime", rig.relay.token)
        await realtime.wait_for("session.created")
        await realtime.send({**SESSION, "event_id": "evt_t"})
        error = await realtime.wait_for("error")
        assert error["error"]["code"] == "invalid_parameter"
        assert error["error"]["param"] == "session.type"
        assert error["error"]["event_id"] == "evt_t"
        assert "transcription session update event to a realtime session" in error["error"]["message"]
        assert "?intent=transcription" in error["error"]["message"]

        client = await RecordingClient.connect(rig.relay.ws_url + "?intent=transcription", rig.relay.token)
        await client.wait_for("session.created")
        start = len(client.events)
        await client.send({"type": "response.create", "event_id": "evt_r"})
        error = await client.wait_for("error", after=start)
        assert (error["error"]["code"], error["error"]["param"]) == ("invalid_value", "type")
        assert "?model=" in error["error"]["message"]
        start = len(client.events)
        other = {"type": "transcription", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
        await client.send({"type": "session.update", "session": other})
        error = await client.wait_for("error", after=start)
        assert error["error"]["param"] == "session.audio.input.transcription.model"
        assert "'gpt-4o-transcribe'" in error["error"]["message"]
        await client.send(SESSION)  # the allowed model: accepted
        await client.wait_for("session.updated", after=start)
        sessions = await rig.sim.sessions()
        received = [t for s in sessions for t in (await rig.sim.session(s["id"]))["received"]]
        assert received  # the frames each upstream session got, as sent
        assert not [frame for frame in received if '"response.create"' in frame]
        assert not [frame for frame in received if '"whisper-1"' in frame]
        await client.close()
        await realtime.close()
