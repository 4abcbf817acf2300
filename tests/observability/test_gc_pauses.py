"""The garbage collector's pauses: start-up's objects frozen out of them, and then each period
what outlived the young collections; every pause timed, every object collected counted."""

from __future__ import annotations

import asyncio
import base64
import gc
import weakref
from collections.abc import Iterator

import aiohttp
import pytest
import websockets
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from relay.observability.gc_pauses import GcPauses
from relay.observability.metrics import RelayMetrics
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from tests.support.relay_process import relay_process


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_collection_is_timed_by_generation() -> None:
    metrics = RelayMetrics(CollectorRegistry())
    pauses = GcPauses(metrics)
    pauses.install()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.uninstall()
    samples = _samples(metrics.render()[0].decode())
    count = "relay_gc_pause_seconds_count"
    assert samples[(count, (("generation", "0"),))] >= 1  # automatic ones may come on top
    assert samples[(count, (("generation", "2"),))] >= 1
    assert samples[("relay_gc_pause_seconds_sum", (("generation", "2"),))] > 0
    gc.collect(2)  # after uninstall: not counted
    assert _samples(metrics.render()[0].decode()) == samples


async def test_a_serving_relay_has_frozen_its_start_up_and_reports_its_pauses() -> None:
    audio = base64.b64encode(bytes(960)).decode()
    append = f'{{"type":"input_audio_buffer.append","audio":"{audio}"}}'
    async with relay_process() as relay:
        async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
            await ws.recv()
            for _ in range(1500):  # each append parses into a dict: young collections follow
                await ws.send(append)
        url = f"http://127.0.0.1:{relay.port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            samples = _samples(await resp.text())
    # Modules, schemas and the app: tens of thousands of objects no collection walks again.
    assert samples[("relay_gc_frozen_objects", ())] > 10_000
    assert samples[("relay_gc_pause_seconds_count", (("generation", "0"),))] > 0


class _Node:
    """A weak-referenceable object to build cycles from."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> tuple[_Node, weakref.ref[_Node]]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


def _frozen(obj: object) -> bool:
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())


@pytest.fixture
def policy() -> Iterator[tuple[GcPauses, RelayMetrics]]:
    gc.collect()
    metrics = RelayMetrics(CollectorRegistry())
    pauses = GcPauses(metrics)
    pauses.install()
    try:
        yield pauses, metrics
    finally:
        pauses.uninstall()
        gc.unfreeze()  # this process's objects back where the collector sees them


def test_a_step_freezes_what_lives_and_collects_young_cycles_first(
    policy: tuple[GcPauses, RelayMetrics],
) -> None:
    pauses, metrics = policy
    kept = [{"item": [n]} for n in range(100)]  # a session's state, say (tracked: not atoms only)
    garbage, dead = _cycle()
    del garbage  # a cycle no one holds: only the collector frees it
    assert dead() is not None
    before = gc.get_freeze_count()
    pauses.step(sessions=1)
    assert dead() is None  # collected, not frozen with the survivors
    assert all(_frozen(entry) for entry in kept)
    assert gc.get_freeze_count() >= before + len(kept)
    samples = _samples(metrics.render()[0].decode())
    collected = sum(v for (name, _), v in samples.items() if name == "relay_gc_collected_objects_total")
    assert collected >= 2


def test_frozen_objects_are_freed_by_reference_counting(policy: tuple[GcPauses, RelayMetrics]) -> None:
    pauses, _ = policy
    kept = [_Node() for _ in range(50)]
    refs = [weakref.ref(node) for node in kept]
    pauses.step(sessions=1)
    count = gc.get_freeze_count()
    del kept  # an ended session: no cycle, so no collector is needed
    assert all(ref() is None for ref in refs)
    assert gc.get_freeze_count() <= count - 50


def test_with_no_session_a_frozen_cycle_is_collected_once(policy: tuple[GcPauses, RelayMetrics]) -> None:
    pauses, metrics = policy
    node, ref = _cycle()
    pauses.step(sessions=1)
    assert _frozen(node)
    del node  # garbage now, but frozen: full collections do not see it
    gc.collect()
    assert ref() is not None
    pauses.step(sessions=1)  # sessions still open: it waits
    assert ref() is not None
    pauses.step(sessions=0)  # no one to hold up: everything unfrozen and collected once
    assert ref() is None
    samples = _samples(metrics.render()[0].decode())
    assert samples[("relay_gc_frozen_objects", ())] == gc.get_freeze_count()  # counted when idle
    count = "relay_gc_pause_seconds_count"
    pauses.step(sessions=0)  # still idle, nothing frozen since: no second full collection
    assert (
        _samples(metrics.render()[0].decode())[(count, (("generation", "2"),))]
        == samples[(count, (("generation", "2"),))]
    )


async def test_a_serving_relay_freezes_its_sessions_and_lets_them_go() -> None:
    """Sessions' objects are frozen while they run (young collections, one a period), and freed
    when they end: after each wave of sessions the process, idle again, sweeps once, and the
    frozen count is back where the first wave left it (which warms caches and the like, kept
    for good), so nothing a session held was kept. The upstream is a simulator of its own: the
    embedded one keeps closed sessions for its inspection API."""
    audio = base64.b64encode(bytes(960)).decode()
    append = f'{{"type":"input_audio_buffer.append","audio":"{audio}"}}'
    runner, sim_port = await start_simulator(SimulatorConfig())
    upstream = f"ws://127.0.0.1:{sim_port}/v1/realtime"
    async with (
        relay_process(RELAY_GC_FREEZE_EVERY_S="0.2", RELAY_UPSTREAM_URL=upstream) as relay,
        aiohttp.ClientSession() as http,
    ):

        async def metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            async with http.get(f"http://127.0.0.1:{relay.port}/metrics") as resp:
                return _samples(await resp.text())

        frozen = ("relay_gc_frozen_objects", ())
        sweeps = ("relay_gc_pause_seconds_count", (("generation", "2"),))  # a full collection each

        async def wave(before: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            """20 sessions open for a few periods, then closed; the metrics once the process,
            idle again, has swept (a full collection more than ``before``)."""
            auth = relay.auth
            sockets = [await websockets.connect(relay.ws_url, additional_headers=auth) for _ in range(20)]
            for ws in sockets:
                await ws.recv()
                for _ in range(20):
                    await ws.send(append)
            await asyncio.sleep(0.6)  # a few periods: the sessions' objects are frozen by now
            for ws in sockets:
                await ws.close()
            async with asyncio.timeout(15):
                while (now := await metrics())[("relay_sessions_active", ())] or now[sweeps] <= before:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            return now

        await asyncio.sleep(0.5)
        start_up = await metrics()
        settled = await wave(start_up[sweeps])
        after = await wave(settled[sweeps])
    await runner.cleanup()
    assert abs(after[frozen] - settled[frozen]) < 20 * 5  # none of the second wave's objects is left
