"""Transcription sessions (``?intent=transcription``): transcripts per committed utterance, no
responses, the API's shapes (every event read is checked against the SDK's types)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from relay.simulator.audio import synthesize
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.simulator.conftest import AUTH, SimClient, ws_url

TRANSCRIPTION_URL = "/v1/realtime?intent=transcription"
MANUAL = {
    "type": "session.update",
    "session": {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": None,
                "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": "names"},
                "noise_reduction": {"type": "near_field"},
            }
        },
        "include": ["item.input_audio_transcription.logprobs"],
    },
}


def _speech(text: str = "The quick brown fox.") -> str:
    return base64.b64encode(synthesize(text, "pcm16")).decode()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), speed=100.0))
    yield port
    await runner.cleanup()


async def _client(port: int, path: str = TRANSCRIPTION_URL) -> AsyncIterator[SimClient]:
    async with websockets.connect(ws_url(port, path), additional_headers=AUTH, max_size=None) as ws:
        yield SimClient(ws)


async def test_intent_transcription_without_a_model_gives_a_transcription_session(port: int) -> None:
    async for client in _client(port):
        created = await client.next()
        session = created["session"]
        assert (session["type"], session["object"]) == ("transcription", "realtime.transcription_session")
        assert "model" not in session
        assert session["audio"]["input"]["transcription"]["model"]


async def test_the_reports_manual_flow_gets_one_transcript_per_commit_with_logprobs(port: int) -> None:
    """An app with its own VAD: clear, appends, commit, per utterance (field failure F3)."""
    async for client in _client(port):
        await client.next()
        await client.send(MANUAL)
        updated = (await client.until("session.updated"))[-1]
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        committed: list[str] = []
        for text in ("First utterance.", "Second utterance."):
            await client.send({"type": "input_audio_buffer.clear"})
            await client.send({"type": "input_audio_buffer.append", "audio": _speech(text)})
            await client.send({"type": "input_audio_buffer.commit"})
            committed.append((await client.until("input_audio_buffer.committed"))[-1]["item_id"])
        await client.until_count("conversation.item.input_audio_transcription.completed", 2)
        completed = [e for e in client.events if e["type"].endswith("transcription.completed")]
        assert [e["item_id"] for e in completed] == committed
        assert all(e["logprobs"] for e in completed)
        deltas = [e for e in client.events if e["type"].endswith("transcription.delta")]
        assert deltas
        assert all(e["logprobs"] for e in deltas)
        types = {e["type"] for e in client.events}
        assert not any(t.startswith(("response.", "conversation.item.added")) for t in types)


async def test_vad_turns_are_transcribed_without_responses(port: int) -> None:
    async for client in _client(port):
        await client.next()
        silence = base64.b64encode(bytes(24 * 2 * 600)).decode()
        for chunk in (silence, _speech("Hello from a speaker."), silence, silence):
            await client.send({"type": "input_audio_buffer.append", "audio": chunk})
        events = await client.until("conversation.item.input_audio_transcription.completed")
        types = [e["type"] for e in events]
        assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.committed")
        assert not [t for t in types if t.startswith("response.")]


@pytest.mark.parametrize(
    ("event", "param", "message"),
    [
        ({"type": "response.create"}, "type", "Invalid value: 'response.create'. Supported values are:"),
        (
            {"type": "session.update", "session": {"type": "realtime"}},
            "session.type",
            "Passing a realtime session update event to a transcription session is not allowed.",
        ),
    ],
)
async def test_what_a_transcription_session_does_not_take(
    port: int, event: dict[str, Any], param: str, message: str
) -> None:
    async for client in _client(port):
        await client.next()
        await client.send(event)
        error = (await client.until("error"))[-1]["error"]
        assert error["param"] == param
        assert error["message"].startswith(message)


async def test_a_realtime_session_refuses_a_transcription_update(port: int) -> None:
    async for client in _client(port, "/v1/realtime?model=gpt-realtime"):
        await client.next()
        await client.send(MANUAL)
        error = (await client.until("error"))[-1]["error"]
        assert error["message"] == (
            "Passing a transcription session update event to a realtime session is not allowed."
        )


async def test_a_long_utterance_may_finish_after_a_short_one_behind_it() -> None:
    """Transcriptions run asynchronously and take longer for longer audio, as the API's do:
    completions can come out of commit order (the relay puts them back in order)."""
    runner, port = await start_simulator(
        SimulatorConfig(timing=Timing(**{**vars(Timing.fast()), "transcription_ms": 150.0}))
    )
    try:
        async for client in _client(port):
            await client.next()
            await client.send(MANUAL)
            await client.until("session.updated")
            long = base64.b64encode(bytes(24 * 2 * 12000)).decode()  # 12 s
            short = base64.b64encode(bytes(24 * 2 * 300)).decode()
            for audio in (long, short):
                await client.send({"type": "input_audio_buffer.append", "audio": audio})
                await client.send({"type": "input_audio_buffer.commit"})
            await client.until_count("conversation.item.input_audio_transcription.completed", 2)
            committed = [e["item_id"] for e in client.events if e["type"] == "input_audio_buffer.committed"]
            completed = [e["item_id"] for e in client.events if e["type"].endswith("transcription.completed")]
            assert completed == committed[::-1]
    finally:
        await runner.cleanup()
