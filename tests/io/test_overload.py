"""Admission control: a saturated event loop refuses new sessions, not the ones it serves.

The lag here is real: a callback that keeps the loop busy (as a CPU-bound burst of sessions
would) makes the relay's timers fire late, which is what the relay measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory
from tests.support.conversation import RecordingClient, text_item

UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@asynccontextmanager
async def busy_loop(
    block_s: float = 0.13, every_s: float = 0.17, *, spin: bool = False
) -> AsyncIterator[None]:
    """Keep the event loop busy ``block_s`` out of every ``every_s`` (a period unlike the
    relay's sampling, so that its timers cannot fall in step between the bursts); ``spin``
    burns the CPU meanwhile instead of sleeping."""
    loop = asyncio.get_running_loop()
    running = True

    def burn() -> None:
        if running:
            if spin:
                until = time.perf_counter() + block_s
                while time.perf_counter() < until:
                    pass
            else:
                time.sleep(block_s)  # time the loop cannot use for anything else
            loop.call_later(every_s - block_s, burn)

    loop.call_soon(burn)
    try:
        yield
    finally:
        running = False


async def test_an_overloaded_relay_refuses_new_sessions_and_keeps_serving_its_own(
    start_relay: RelayFactory,
) -> None:
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), speed=50.0))
    relay = await start_relay(
        upstream="simulator", upstream_url=f"ws://127.0.0.1:{port}/v1/realtime", overload_lag_ms=30.0
    )
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    async with aiohttp.ClientSession() as http:
        async with busy_loop():
            async with asyncio.timeout(10):
                while relay.metric("relay_overloaded") < 1:  # noqa: ASYNC110 (a metric)
                    await asyncio.sleep(0.05)
            async with http.get(relay.ws_url, headers={**UPGRADE, **relay.auth}) as resp:
                assert resp.status == 503
                assert int(resp.headers["Retry-After"]) >= 1
                body = await resp.json()
            assert body["error"]["code"] == "overloaded"
            async with http.get(relay.http_url + "/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["status"] == "overloaded"
            # The session it already serves goes on.
            await client.send(text_item("still there?"))
            await client.send({"type": "response.create"})
            done = await client.wait_for("response.done")
            assert done["response"]["status"] == "completed"
        assert relay.metric("relay_event_loop_lag_seconds") > 0.03
        async with asyncio.timeout(10):
            while relay.metric("relay_overloaded") > 0:  # noqa: ASYNC110 (a metric)
                await asyncio.sleep(0.05)
        second = await RecordingClient.connect(relay.ws_url, relay.token)  # admitted again
        await second.wait_for("session.created")
    assert relay.metric("relay_auth_rejections_total", {"reason": "overloaded"}) == 1
    await second.close()
    await client.close()
    await runner.cleanup()


async def test_a_relay_over_its_cpu_share_refuses_new_sessions_and_says_why(
    start_relay: RelayFactory,
) -> None:
    """Lag judged off: the CPU share alone refuses (the loop still fires its timers on time)."""
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), speed=50.0))
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        overload_lag_ms=0.0,
        overload_cpu_percent=50.0,
    )
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    async with aiohttp.ClientSession() as http:
        async with busy_loop(0.03, 0.04, spin=True):  # 75% of a core, in short bursts
            async with asyncio.timeout(15):
                while relay.metric("relay_overloaded") < 1:  # noqa: ASYNC110 (a metric)
                    await asyncio.sleep(0.05)
            assert relay.metric("relay_cpu_share") > 0.5
            async with http.get(relay.ws_url, headers={**UPGRADE, **relay.auth}) as resp:
                assert resp.status == 503
                assert int(resp.headers["Retry-After"]) == 5
                body = await resp.json()
            assert body["error"]["code"] == "overloaded"
            assert "of its core" in body["error"]["message"]
            async with http.get(relay.http_url + "/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["cpu_share"] > 0.5
            await client.send(text_item("still there?"))
            await client.send({"type": "response.create"})
            done = await client.wait_for("response.done")
            assert done["response"]["status"] == "completed"
        async with asyncio.timeout(15):
            while relay.metric("relay_overloaded") > 0:  # noqa: ASYNC110 (a metric)
                await asyncio.sleep(0.05)
        second = await RecordingClient.connect(relay.ws_url, relay.token)  # admitted again
        await second.wait_for("session.created")
    await second.close()
    await client.close()
    await runner.cleanup()


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        ([0.5] * 100, False),
        ([1.0] * 100, True),  # a full core, for long enough
        ([1.0] * 5, False),  # half a second of handshakes is not a full relay
        ([1.0] * 100 + [0.85] * 50, True),  # hysteresis: within ten points of the threshold
        ([1.0] * 100 + [0.5] * 100, False),
    ],
)
def test_the_cpu_share_is_judged_over_seconds_with_hysteresis(shares: list[float], expected: bool) -> None:
    from relay.core.overload import LagMeter

    meter = LagMeter(0.0, cpu_threshold=0.9)
    for share in shares:
        meter.sample(0.0, share)
    assert meter.overloaded is expected


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([0.001] * 20, False),
        ([0.2] * 20, True),
        ([0.2] * 20 + [0.02] * 3, True),  # hysteresis: still above half the threshold
        ([0.2] * 20 + [0.0] * 30, False),
    ],
)
def test_the_lag_meter_has_hysteresis(samples: list[float], expected: bool) -> None:
    from relay.core.overload import LagMeter

    meter = LagMeter(0.05)
    for sample in samples:
        meter.sample(sample)
    assert meter.overloaded is expected
