"""An ended session is freed by reference counting alone, not left to the cyclic collector.

A full collection stops the event loop for every session while it walks each object it finds
(relay.observability.gc_pauses): an ended session left as a cycle (its connections calling its
methods, its supervisor pointing back at it) made every full collection walk ~140 objects per
session that had ended since, 46-68 ms at 100 live sessions. So with the collector off, a session
that ran, rotated its upstream and ended must be gone once the registry lets go of it.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import weakref
from collections.abc import Iterator

import orjson
import pytest
import websockets

from relay.io.handler import RELAY_CONTEXT
from tests.conftest import RelayFactory


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _until(condition: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.mark.usefixtures("collector_off")
async def test_a_session_that_ran_and_rotated_is_freed_when_it_ends(start_relay: RelayFactory) -> None:
    relay = await start_relay(simulator_speed=20.0, rotate_after_s=0.5, rotate_jitter_s=0.0)
    registry = relay.app[RELAY_CONTEXT].registry
    url = relay.ws_url + "?model=gpt-realtime"
    async with websockets.connect(url, additional_headers=relay.auth) as ws:
        assert orjson.loads(await ws.recv())["type"] == "session.created"
        (session,) = registry.sessions.values()
        refs = [weakref.ref(o) for o in (session, session.supervisor, session.client, session.checker)]
        first_link = weakref.ref(session.link)
        del session
        audio = base64.b64encode(bytes(961)).decode()  # odd: a split sample is reported too
        for _ in range(50):
            await ws.send(orjson.dumps({"type": "input_audio_buffer.append", "audio": audio}).decode())
        await ws.send('{"type":"input_audio_buffer.commit"}')
        await ws.send('{"type":"response.create"}')
        while orjson.loads(await ws.recv())["type"] != "response.done":
            pass
        await _until(lambda: first_link() is None or first_link() is not _live_link(registry))
        await asyncio.sleep(1.0)  # at least one rotation: an old upstream link let go as well
    await _until(lambda: not registry.sessions)
    await asyncio.sleep(0.2)  # the session's last callbacks (its sockets' closes) run
    alive = [type(ref()).__name__ for ref in refs if ref() is not None]
    assert not alive, f"left for the cyclic collector: {alive}"


def _live_link(registry: object) -> object:
    sessions = list(registry.sessions.values())  # type: ignore[attr-defined]
    return sessions[0].link if sessions else None
