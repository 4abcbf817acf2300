"""The recorded real sessions, replayed against the simulator: same event order, same shapes.

Each recording's client frames are sent as the recorded app sent them (waiting for the same
answers it waited for). Tolerated differences, and why:
- runs of deltas are folded: their count depends on the words and audio generated, and the
  interleaving of audio and transcript deltas on the live model's pacing (it varies between
  recordings), so the two count as one stream;
- ``conversation.item.input_audio_transcription.*`` events are set aside: the live API sends them
  asynchronously, interleaved with the response at the transcriber's pace (reference §3.2);
- ``rate_limits.updated`` is set aside: the live API sends it about 43 ms after ``response.done``
  (reference §3.2, [CAP]), and the recordings end or move on before it arrives;
- the recordings' appended audio is zero-filled stubs, so it is replaced by synthetic speech
  framed in silence, giving the VAD a real turn to find.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from relay.simulator.audio import synthesize
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.simulator.conftest import AUTH, SimClient, ws_url
from tests.support.recordings import load, recording_files, require_recordings

_ASYNC_TYPES = ("conversation.item.input_audio_transcription.", "rate_limits.updated")
_OPAQUE_KEYS = ("parameters", "metadata")  # user-chosen contents, not the API's shape


_SPOKEN_DELTAS = ("response.output_audio.delta", "response.output_audio_transcript.delta")


def _shape(types: list[str]) -> list[str]:
    kept = [t for t in types if not t.startswith(_ASYNC_TYPES)]
    spoken = ["spoken deltas" if t in _SPOKEN_DELTAS else t for t in kept]
    return [t for t, _ in groupby(spoken)]


def _key_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path in an event (list elements share the path ``a[]``)."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            if key not in _OPAQUE_KEYS:
                paths |= _key_paths(inner, path)
    elif isinstance(value, list):
        for inner in value:
            paths |= _key_paths(inner, prefix + "[]")
    return paths


def _paths_by_type(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for event in events:
        found.setdefault(event["type"], set()).update(_key_paths(event))
    return found


def _with_real_speech(sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    silence = np.zeros(24 * 600, dtype="<i2").tobytes()
    speech = synthesize("Hello, my name is Marcelo.", "pcm16")
    audio = silence + speech + silence * 2
    appends = [
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio[i : i + 4800]).decode()}
        for i in range(0, len(audio), 4800)
    ]
    return [e for e in sent if e["type"] != "input_audio_buffer.append"] + appends


@pytest.fixture
async def ports() -> AsyncIterator[dict[str, int]]:
    """One simulator per interface the recordings were made on."""
    started = {
        kind: await start_simulator(SimulatorConfig(timing=Timing.fast(), interface=kind, speed=100.0))
        for kind in ("ga", "azure-ga")
    }
    yield {kind: port for kind, (_, port) in started.items()}
    for runner, _ in started.values():
        await runner.cleanup()


async def _replay(url: str, path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(recorded server events, simulator events) for one recording."""
    frames = load(path)
    sent = [f["data"] for f in frames if f["direction"] == "sent"]
    recorded = [f["data"] for f in frames if f["direction"] == "received"]
    if any(e["type"] == "input_audio_buffer.append" for e in sent):
        sent = _with_real_speech(sent)
    async with websockets.connect(url, additional_headers=AUTH, max_size=None) as ws:
        client = SimClient(ws)
        await client.until("session.created")
        requested = 0
        for event in sent:
            if requested and event["type"] != "input_audio_buffer.append":
                await client.until_count("response.done", requested)  # as the app waited
            await client.send(event)
            requested += event["type"] == "response.create"
            if event["type"] == "session.update":
                await client.until("session.updated")
        await client.until_count("response.done", sum(e["type"] == "response.done" for e in recorded))
        await asyncio.sleep(0.05)
    return recorded, client.events


def _url(ports: dict[str, int], path: Path) -> str:
    if path.name.startswith("azure-"):
        return ws_url(ports["azure-ga"], "/openai/v1/realtime?model=gpt-realtime")
    return ws_url(ports["ga"])


@pytest.mark.parametrize("path", recording_files(), ids=lambda p: p.stem)
async def test_replayed_recording_gives_the_recorded_event_sequence(
    ports: dict[str, int], path: Path
) -> None:
    require_recordings()
    recorded, got = await _replay(_url(ports, path), path)
    assert _shape([e["type"] for e in got]) == _shape([e["type"] for e in recorded])


@pytest.mark.parametrize("path", recording_files(), ids=lambda p: p.stem)
async def test_replayed_recording_gives_events_with_the_recorded_keys(
    ports: dict[str, int], path: Path
) -> None:
    """Every key the live API sent, at every depth, the simulator sends too, and no others."""
    require_recordings()
    recorded, got = await _replay(_url(ports, path), path)
    expected, actual = _paths_by_type(recorded), _paths_by_type(got)
    for event_type, paths in expected.items():
        assert actual.get(event_type) == paths, event_type
