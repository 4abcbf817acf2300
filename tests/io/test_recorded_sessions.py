"""Real recorded sessions played through the relay: a scripted upstream answers each recorded
client frame with the server frames that followed it, and both sides must see exactly the
recorded traffic, in order, byte for byte."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest
import websockets

from tests.conftest import RelayFactory
from tests.support.recordings import load, recording_files
from tests.support.scripted_upstream import ScriptedConnection, ScriptedUpstream


def _script(path: Any) -> tuple[list[bytes], list[bytes], list[list[bytes]]]:
    """(greeting frames, client frames, server frames answering each client frame)."""
    greeting: list[bytes] = []
    sent: list[bytes] = []
    answers: list[list[bytes]] = []
    for frame in load(path):
        raw = orjson.dumps(_whole_samples(frame["data"]))
        if frame["direction"] == "sent":
            sent.append(raw)
            answers.append([])
        elif answers:
            answers[-1].append(raw)
        else:
            greeting.append(raw)
    return greeting, sent, answers


def _whole_samples(event: dict[str, Any]) -> dict[str, Any]:
    """The recorder cut appends to 33-byte stubs; the API received whole PCM16 samples."""
    if event.get("type") != "input_audio_buffer.append":
        return event
    audio = base64.b64decode(event["audio"])
    return {**event, "audio": base64.b64encode(audio + b"\0" * (len(audio) % 2)).decode()}


@pytest.mark.parametrize("path", recording_files(), ids=lambda p: p.stem)
async def test_recorded_session_through_the_relay(start_relay: RelayFactory, path: Any) -> None:
    greeting, sent, answers = _script(path)
    pending = list(answers)

    async def replay(conn: ScriptedConnection, data: bytes) -> None:
        for raw in pending.pop(0):
            await conn.send(raw)

    upstream = await ScriptedUpstream(replay, greet=False).start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    expected = greeting + [raw for group in answers for raw in group]
    received: list[bytes] = []
    async with websockets.connect(relay.ws_url, additional_headers=relay.auth, max_size=None) as ws:
        await upstream.connected.wait()
        for raw in greeting:
            await upstream.connections[0].send(raw)
        for index, raw in enumerate(sent):
            await ws.send(raw.decode())
            want = len(greeting) + sum(len(group) for group in answers[: index + 1])
            while len(received) < want:
                received.append(await asyncio.wait_for(ws.recv(decode=False), 10))
    assert received == expected
    assert upstream.connections[0].received == sent
    await upstream.close()
