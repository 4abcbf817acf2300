"""Usage counted from live sessions, end to end: every response the API billed is attributed to
the client, across an upstream replacement and the app's own reconnect, and a budget spent in
the middle of a session refuses the next ``response.create`` while the session stays open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import TOKEN, RelayFactory, RelayHandle
from tests.support.conversation import Event, RecordingClient, text_item
from tests.support.sim_control import SimControl

ADMIN_TOKEN = "relay-admin-token-abcdefghijklmnopq"
REALISTIC = SimulatorConfig(speed=50.0, timing=Timing.realistic())


@pytest.fixture
async def sim() -> AsyncIterator[tuple[str, SimControl]]:
    runner, port = await start_simulator(REALISTIC)
    yield f"ws://127.0.0.1:{port}/v1/realtime", SimControl(f"http://127.0.0.1:{port}")
    await runner.cleanup()


async def _relay(start_relay: RelayFactory, url: str, **settings: Any) -> RelayHandle:
    return await start_relay(
        upstream="simulator",
        upstream_url=url,
        admin_token=ADMIN_TOKEN,
        rotate_after_s=0,
        reconnect_base_delay_s=0.05,
        **settings,
    )


async def _turn(client: RecordingClient, text: str) -> Event:
    start = len(client.events)
    await client.send(text_item(text))
    await client.send({"type": "response.create"})
    return await client.wait_for("response.done", after=start)


async def _admin_tokens(relay: RelayHandle, expected: int) -> dict[str, Any]:
    """The identity's day totals once they reach ``expected`` (spends are written in the
    background, after the response.done that carried them)."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        while True:
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with http.get(relay.http_url + "/admin/usage", headers=headers) as resp:
                identities = (await resp.json())["periods"]["day"]["identities"]
            totals: dict[str, Any] = next(iter(identities.values()), {"tokens": 0})
            if totals["tokens"] >= expected:
                return totals
            await asyncio.sleep(0.05)


def _billed(events: list[Event]) -> int:
    return sum(e["response"]["usage"]["total_tokens"] for e in events if e["type"] == "response.done")


async def test_usage_is_attributed_across_a_replacement_and_a_resume(
    start_relay: RelayFactory, sim: tuple[str, SimControl]
) -> None:
    url, control = sim
    relay = await _relay(start_relay, url)
    client = await RecordingClient.connect(relay.ws_url + "?relay_resume=1", TOKEN)
    await client.wait_for("session.created")
    await _turn(client, "first question")
    upstream = await control.open_session(client.relay_session)
    await control.fault(upstream["id"], kind="drop")  # the supervisor replaces the upstream
    await _turn(client, "second question")
    token = next(e["resume_token"] for e in client.events if e["type"] == "relay.session_resumable")
    client.ws.transport.abort()  # the app's own network goes
    await client._reader
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "X-Relay-Resume-Token": token,
        "X-Relay-Last-Event-Id": client.events[-1]["event_id"],
    }
    back = RecordingClient(await websockets.connect(relay.ws_url, additional_headers=headers))
    await _turn(back, "third question")
    billed = _billed(client.events) + _billed(back.events)
    assert billed > 0
    totals = await _admin_tokens(relay, billed)
    assert totals["tokens"] == billed  # nothing missed, nothing counted twice
    assert totals["cost_usd"] > 0
    by_kind = sum(
        relay.metric("relay_tokens_total", {"kind": kind, "model": "gpt-realtime"})
        for kind in ("input_text", "input_audio", "input_cached", "output_text", "output_audio")
    )
    assert by_kind == billed
    await back.close()


async def test_a_budget_spent_mid_session_refuses_the_next_response_only(
    start_relay: RelayFactory, sim: tuple[str, SimControl]
) -> None:
    url, _ = sim
    relay = await _relay(
        start_relay,
        url,
        budgets=[{"scope": "identity", "period": "day", "max_tokens": 10}],
    )
    client = await RecordingClient.connect(relay.ws_url, TOKEN)
    await client.wait_for("session.created")
    first = await _turn(client, "a question that spends the budget")
    assert first["response"]["status"] == "completed"  # under budget when it started: it finishes
    await _admin_tokens(relay, 11)
    start = len(client.events)
    await client.send(text_item("another question"))
    await client.send({"type": "response.create", "event_id": "evt_over"})
    error = await client.wait_for("error", after=start)
    assert error["error"]["code"] == "budget_exceeded"
    assert error["error"]["event_id"] == "evt_over"
    assert "per day" in error["error"]["message"]
    assert "response.created" not in client.types()[start:]
    added = await client.wait_for("conversation.item.added", after=start)  # the session goes on
    assert added["item"]["content"][0]["text"] == "another question"
    assert (
        relay.metric(
            "relay_budget_refusals_total", {"scope": "identity", "period": "day", "where": "response"}
        )
        == 1
    )
    await client.close()
