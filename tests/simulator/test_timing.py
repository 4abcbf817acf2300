"""The simulator keeps the live API's timing: each figure measured on real sockets.

Only lower bounds are asserted against wall-clock time (a loaded machine is slower, never faster);
where a delay is measured from an event the client itself received, it may come out a few ms
short, because the first event's trip through the loopback is not the second's: ``SLACK``.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import fields, replace
from typing import Any

import orjson
import pytest
import websockets

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.simulator.conftest import AUTH, SimClient, ws_url
from tests.support.relay_process import clean_env, free_port, wait_listening

SLACK = 0.02
TEXT_ONLY = {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
MANUAL_TURNS = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "output_modalities": ["text"],
        "audio": {"input": {"turn_detection": None}},
    },
}
USER_TEXT = {
    "type": "conversation.item.create",
    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
}


def fast(**figures: float) -> Timing:
    """The fast profile with only the figures under test."""
    return replace(Timing.fast(), **figures)


class Timed(SimClient):
    """A checked client that notes when each event arrived."""

    def __init__(self, ws: Any) -> None:
        super().__init__(ws)
        self.arrivals: list[tuple[float, dict[str, Any]]] = []

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        event = await super().next(timeout)
        self.arrivals.append((time.monotonic(), event))
        return event

    async def at(self, event_type: str) -> float:
        """When the next ``event_type`` arrived."""
        await self.until(event_type)
        return self.arrivals[-1][0]

    async def sent_at(self, event: dict[str, Any]) -> float:
        sent = time.monotonic()
        await self.send(event)
        return sent


@asynccontextmanager
async def simulator(timing: Timing, **config: Any) -> AsyncIterator[int]:
    runner, port = await start_simulator(SimulatorConfig(timing=timing, speed=100.0, **config))
    try:
        yield port
    finally:
        await runner.cleanup()


@asynccontextmanager
async def timed_session(port: int) -> AsyncIterator[tuple[Timed, float, float]]:
    """A connected client, when the upgrade started and when its 101 arrived."""
    started = time.monotonic()
    async with websockets.connect(ws_url(port), additional_headers=AUTH, max_size=None) as ws:
        upgraded = time.monotonic()
        yield Timed(ws), started, upgraded


def test_profiles() -> None:
    realistic, fast = Timing.realistic(), Timing.fast()
    assert SimulatorConfig().timing == realistic  # what `relay serve`'s embedded simulator gets
    assert all(getattr(realistic, f.name) > 0 for f in fields(Timing))
    assert all(getattr(fast, f.name) == 0 for f in fields(Timing))
    with pytest.raises(ValueError, match="ack_ms"):
        Timing(ack_ms=-1)


async def test_each_figure_is_honoured() -> None:
    timing = Timing(
        handshake_ms=150,
        session_created_ms=80,
        ack_ms=80,
        session_update_ms=100,
        first_delta_ms=150,
        rate_limits_ms=80,
    )
    async with (
        simulator(timing, reply_text="Hi there!") as port,
        timed_session(port) as (sim, start, upgraded),
    ):
        assert upgraded - start >= 0.15
        assert await sim.at("session.created") - upgraded >= 0.08 - SLACK
        sent = await sim.sent_at(TEXT_ONLY)
        assert await sim.at("session.updated") - sent >= 0.08 + 0.1
        sent = await sim.sent_at(USER_TEXT)
        assert await sim.at("conversation.item.added") - sent >= 0.08
        sent = await sim.sent_at({"type": "response.create"})
        created = await sim.at("response.created")
        assert created - sent >= 0.08
        assert await sim.at("response.output_text.delta") - created >= 0.15 - SLACK
        done = await sim.at("response.done")
        assert await sim.at("rate_limits.updated") - done >= 0.08 - SLACK


async def test_the_default_is_the_live_apis_timing() -> None:
    """No timing given: the realistic profile, as `relay serve` and `relay simulate` users get."""
    runner, port = await start_simulator(SimulatorConfig(speed=100.0))
    try:
        async with timed_session(port) as (sim, start, upgraded):
            assert upgraded - start >= Timing.realistic().handshake_ms / 1000
            await sim.until("session.created")
            sent = await sim.sent_at(TEXT_ONLY)
            assert await sim.at("session.updated") - sent >= 0.26  # captured live (reference §3.2)
    finally:
        await runner.cleanup()


async def test_replies_keep_the_order_of_the_client_events() -> None:
    """session.update takes longest to answer; nothing sent after it may be answered before it."""
    timing = fast(ack_ms=60, session_update_ms=150)
    append = {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(960)).decode()}
    async with simulator(timing, reply_text="Hi") as port, timed_session(port) as (sim, _, _):
        await sim.until("session.created")
        for frame in (
            MANUAL_TURNS,
            append,
            USER_TEXT,
            {"type": "input_audio_buffer.commit"},  # 20 ms: too little, an error
            append,
            {"type": "input_audio_buffer.clear"},
            {"type": "response.create"},
        ):
            await sim.send(frame)
        await sim.ws.send(b"\x00")  # binary: answered by the server's own error path
        await sim.ws.send("{not json")
        while sum(e["type"] == "error" for e in sim.events) < 3 or "response.done" not in _types(sim.events):
            await sim.next()
    # The response streams on its own once created; every answer to a client event is in order.
    answers = [e for e in sim.events[1:] if not _streamed(e)]
    assert [e["type"] for e in answers] == [
        "session.updated",
        "conversation.item.added",
        "conversation.item.done",
        "error",
        "input_audio_buffer.cleared",
        "response.created",
        "error",
        "error",
    ], _types(sim.events)
    codes = [e["error"]["code"] for e in answers if e["type"] == "error"]
    assert codes == ["input_audio_buffer_commit_empty", "invalid_event", "invalid_json"]


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def _streamed(event: dict[str, Any]) -> bool:
    """Part of the response's own stream (anything it says after response.created)."""
    kind = str(event["type"])
    if kind.startswith("conversation.item."):
        return bool(event["item"]["role"] == "assistant")
    return kind == "rate_limits.updated" or (kind.startswith("response.") and kind != "response.created")


async def test_appends_are_read_and_buffered_while_an_acknowledgement_is_pending() -> None:
    seen: list[tuple[float, str, bytes]] = []

    def probe(direction: str, frame: bytes) -> None:
        seen.append((time.monotonic(), direction, frame[:48]))

    timing = fast(session_update_ms=300)
    chunk = bytes(range(240)) * 4  # 20 ms of PCM16, the usual frame
    append = orjson.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
    async with simulator(timing, probe=probe) as port, timed_session(port) as (sim, _, _):
        await sim.until("session.created")
        await sim.send(MANUAL_TURNS)
        for _ in range(500):
            await sim.ws.send(append.decode())
        await sim.send({"type": "input_audio_buffer.commit"})
        committed = (await sim.until("input_audio_buffer.committed"))[-1]
        await sim.send({"type": "conversation.item.retrieve", "item_id": committed["item_id"]})
        retrieved = (await sim.until("conversation.item.retrieved"))[-1]
    appends = [t for t, direction, frame in seen if direction == "recv" and b"append" in frame]
    (updated,) = [t for t, direction, frame in seen if direction == "send" and b"session.updated" in frame]
    assert len(appends) == 500
    assert max(appends) < updated  # every append was read before the update was answered
    audio = base64.b64decode(retrieved["item"]["content"][0]["audio"])
    assert audio == chunk * 500  # ... and buffered, in order


async def test_a_cancel_during_the_models_first_token_ends_the_response_without_output() -> None:
    async with simulator(fast(first_delta_ms=300)) as port, timed_session(port) as (sim, _, _):
        await sim.until("session.created")
        await sim.send(TEXT_ONLY)
        await sim.send({"type": "response.create"})
        await sim.until("response.created")
        await sim.send({"type": "response.cancel"})
        got = await sim.until("response.done")
        assert [e["type"] for e in got][-1:] == ["response.done"], got
        assert not [e for e in got if e["type"].endswith(".delta")]
        assert got[-1]["response"]["status"] == "cancelled"


async def test_the_fast_profile_answers_at_once() -> None:
    realistic = Timing.realistic()
    live = (
        realistic.handshake_ms
        + realistic.session_created_ms
        + 2 * realistic.ack_ms
        + realistic.session_update_ms
        + realistic.first_delta_ms
    ) / 1000
    async with simulator(Timing.fast(), reply_text="Hi") as port, timed_session(port) as (sim, start, _):
        await sim.until("session.created")
        await sim.send(TEXT_ONLY)
        await sim.until("session.updated")
        await sim.send({"type": "response.create"})
        first_delta = await sim.at("response.output_text.delta")
    assert first_delta - start < live / 4  # a generous ratio: the live API's timing is ~1 s here


async def test_relay_simulate_flags_reach_the_simulator() -> None:
    port = free_port()
    flags = {"handshake": 150, "session-created": 80, "ack": 60, "session-update": 90, "rate-limits": 80}
    command = [sys.executable, "-m", "relay", "simulate", "--port", str(port), "--speed", "100"]
    command += ["--profile", "fast", *(f"--{k}-ms={v}" for k, v in flags.items())]
    proc = subprocess.Popen(command, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await wait_listening(port, proc)
        async with timed_session(port) as (sim, start, upgraded):
            created = await sim.at("session.created")
            sent = await sim.sent_at(TEXT_ONLY)
            updated = await sim.at("session.updated")
            await sim.send({"type": "response.create"})
            response = await sim.at("response.created")
            first_delta = await sim.at("response.output_text.delta")
            done = await sim.at("response.done")
            rate_limits = await sim.at("rate_limits.updated")
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
    assert upgraded - start >= 0.15
    # From the client's start, not from when it saw the 101: under load the 101 reaches the
    # client late, which shortens the gap seen after it, never the sum of the two delays.
    assert created - start >= 0.15 + 0.08
    assert updated - sent >= 0.06 + 0.09
    assert rate_limits - done >= 0.08 - SLACK
    # --first-delta-ms was not given: the fast profile's zero, far below a delay set by a flag.
    assert first_delta - response < (upgraded - start) / 2
