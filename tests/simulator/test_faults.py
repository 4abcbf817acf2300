"""Fault injection through the control API: each kind, now or right after the N-th event of a type."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import websockets

from tests.simulator.conftest import AUTH, SimClient, ws_url
from tests.support.sim_control import SimControl


def _user_text(text: str) -> dict[str, Any]:
    content = [{"type": "input_text", "text": text}]
    item = {"type": "message", "role": "user", "content": content}
    return {"type": "conversation.item.create", "item": item}


TEXT_TURN = _user_text("Hello")


@pytest.fixture
def control(sim_port: int) -> SimControl:
    return SimControl(f"http://127.0.0.1:{sim_port}")


async def _session_id(sim: SimClient) -> str:
    return str(sim.events[0]["session"]["id"])


async def _closed(sim: SimClient) -> tuple[list[dict[str, Any]], int | None, str]:
    """Events read until the socket closes, and how it closed."""
    got: list[dict[str, Any]] = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            got.append(await sim.next())
    return got, sim.ws.close_code, sim.ws.close_reason or ""


async def test_drop_is_an_abrupt_tcp_close_the_peer_sees_as_1006(sim: SimClient, control: SimControl) -> None:
    session_id = await _session_id(sim)
    await control.fault(session_id, kind="drop")
    got, code, _ = await _closed(sim)
    assert (got, code) == ([], 1006)
    state = await control.session(session_id)
    assert (state["open"], state["close_code"]) == (False, 1006)


@pytest.mark.parametrize("code", [1000, 1001, 1011])
async def test_close_with_a_code(sim: SimClient, control: SimControl, code: int) -> None:
    session_id = await _session_id(sim)
    await control.fault(session_id, kind="close", code=code, reason="going away")
    got, closed_with, reason = await _closed(sim)
    assert (got, closed_with, reason) == ([], code, "going away")


async def test_close_1001_for_session_expired_sends_the_api_error_first(
    sim: SimClient, control: SimControl
) -> None:
    await control.fault(await _session_id(sim), kind="close", code=1001, reason="session_expired")
    got, code, reason = await _closed(sim)
    message = "Your session hit the maximum duration of 60 minutes."
    assert [e["error"]["code"] for e in got] == ["session_expired"]
    assert (got[0]["error"]["message"], code, reason) == (message, 1001, message)


async def test_server_error_event_leaves_the_session_usable(sim: SimClient, control: SimControl) -> None:
    await control.fault(await _session_id(sim), kind="server_error")
    error = await sim.next()
    assert (error["error"]["type"], error["error"]["code"]) == ("server_error", None)
    assert error["error"]["message"].startswith("The server had an error while processing your request.")
    await sim.send({"type": "session.update", "session": {"type": "realtime", "instructions": "x"}})
    assert (await sim.next())["type"] == "session.updated"


async def test_stall_stops_reading_until_it_ends(sim: SimClient, control: SimControl) -> None:
    session_id = await _session_id(sim)
    await control.fault(session_id, kind="stall", seconds=3)
    await sim.send({"type": "session.update", "session": {"type": "realtime", "instructions": "x"}})
    await asyncio.sleep(0.1)
    assert "session.update" not in (await control.session(session_id))["received_types"]
    assert (await sim.next(timeout=10))["type"] == "session.updated"
    assert "session.update" in (await control.session(session_id))["received_types"]


async def test_latency_delays_every_event(sim: SimClient, control: SimControl) -> None:
    await control.fault(await _session_id(sim), kind="latency", ms=300)
    loop = asyncio.get_running_loop()
    for _ in range(2):
        started = loop.time()
        await sim.send({"type": "session.update", "session": {"type": "realtime", "instructions": "x"}})
        await sim.next()
        assert loop.time() - started >= 0.3  # a lower bound only: the delay is a sleep


async def test_drop_right_after_the_nth_audio_delta(sim: SimClient, control: SimControl) -> None:
    session_id = await _session_id(sim)
    await control.script(replies=["A long enough answer to need many chunks of audio. " * 3])
    await control.fault(session_id, kind="drop", after_event="response.output_audio.delta", count=3)
    await sim.send(TEXT_TURN)
    await sim.send({"type": "response.create"})
    got, code, _ = await _closed(sim)
    assert sum(e["type"] == "response.output_audio.delta" for e in got) == 3
    assert got[-1]["type"] == "response.output_audio.delta"
    assert code == 1006


async def test_close_mid_function_call_arguments(sim: SimClient, control: SimControl) -> None:
    session_id = await _session_id(sim)
    await control.script(tool_arguments={"city": "Paris", "unit": "celsius", "days": 3})
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    await sim.send({"type": "session.update", "session": {"type": "realtime", "tools": [tool]}})
    await sim.until("session.updated")
    await control.fault(
        session_id, kind="close", code=1011, after_event="response.function_call_arguments.delta", count=2
    )
    await sim.send(_user_text("get_weather?"))
    await sim.send({"type": "response.create"})
    got, code, _ = await _closed(sim)
    assert [e["type"] for e in got][-2:] == ["response.function_call_arguments.delta"] * 2
    assert code == 1011


async def test_fault_requests_for_unknown_sessions_or_kinds_are_refused(
    sim: SimClient, control: SimControl
) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as missing:
        await control.fault("sess_nope", kind="drop")
    with pytest.raises(aiohttp.ClientResponseError) as unknown:
        await control.fault(await _session_id(sim), kind="explode")
    assert (missing.value.status, unknown.value.status) == (404, 400)


@pytest.fixture
def connect(sim_port: int) -> Any:
    def opener() -> Any:
        return websockets.connect(ws_url(sim_port), additional_headers=AUTH, open_timeout=5)

    return opener


@pytest.mark.parametrize("status", [429, 503, 401])
async def test_refusing_handshakes_with_a_status(control: SimControl, connect: Any, status: int) -> None:
    await control.global_fault(refuse=str(status), seconds=30)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect():
            pass
    assert refused.value.response.status_code == status
    await control.global_fault(clear=True)
    async with connect() as ws:
        assert '"session.created"' in await ws.recv()


async def test_refusing_connections_resets_them_without_an_http_answer(
    control: SimControl, connect: Any
) -> None:
    await control.global_fault(refuse="connect", seconds=30)
    with pytest.raises((websockets.InvalidHandshake, OSError, EOFError)) as refused:
        async with connect():
            pass
    assert not isinstance(refused.value, websockets.InvalidStatus)
    await control.global_fault(clear=True)
    async with connect() as ws:
        assert '"session.created"' in await ws.recv()


async def test_refusal_ends_by_itself(control: SimControl, connect: Any) -> None:
    await control.global_fault(refuse="503", seconds=0.3)
    statuses: list[int] = []
    async with asyncio.timeout(10):
        while not statuses or statuses[-1] != 101:
            statuses.append(await _handshake_status(connect))
            await asyncio.sleep(0.05)
    assert set(statuses) == {503, 101}


async def _handshake_status(connect: Any) -> int:
    try:
        async with connect() as ws:
            assert '"session.created"' in await ws.recv()
            return 101
    except websockets.InvalidStatus as refused:
        return int(refused.response.status_code)


async def test_faults_armed_for_the_next_sessions(control: SimControl, connect: Any) -> None:
    await control.global_fault(next_sessions=1, fault={"kind": "drop", "after_event": "session.created"})
    async with connect() as ws:
        assert '"session.created"' in await ws.recv()
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1006
    async with connect() as ws:  # only the next one
        assert '"session.created"' in await ws.recv()
        await ws.send('{"type": "input_audio_buffer.clear"}')
        assert '"input_audio_buffer.cleared"' in await ws.recv()


async def test_faults_configured_at_start_hit_every_session() -> None:
    from relay.simulator.config import SimulatorConfig
    from relay.simulator.server import start_simulator
    from relay.simulator.timing import Timing

    fault = {"kind": "close", "code": 1011, "after_event": "session.updated", "count": 1}
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), session_faults=(fault,)))
    try:
        for _ in range(2):
            async with websockets.connect(ws_url(port), additional_headers=AUTH) as ws:
                client = SimClient(ws)
                await client.until("session.created")
                await client.send(
                    {"type": "session.update", "session": {"type": "realtime", "instructions": "x"}}
                )
                got, code, _ = await _closed(client)
                assert ([e["type"] for e in got], code) == (["session.updated"], 1011)
    finally:
        await runner.cleanup()
