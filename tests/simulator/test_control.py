"""The inspection and script API: what tests (and the supervisor's tests) read and steer."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.simulator.conftest import AUTH, SimClient, ws_url
from tests.support.sim_control import SimControl


def _user_text(text: str, **extra: Any) -> dict[str, Any]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return {"type": "conversation.item.create", "item": {**item, **extra}}


@pytest.fixture
def control(sim_port: int) -> SimControl:
    return SimControl(f"http://127.0.0.1:{sim_port}")


async def test_sessions_are_listed_and_found_by_relay_session(sim_port: int, control: SimControl) -> None:
    headers = {**AUTH, "X-Relay-Session-Id": "rs_1"}
    async with websockets.connect(ws_url(sim_port), additional_headers=headers) as ws:
        created = orjson.loads(await ws.recv())
        listed = await control.sessions("rs_1")
        assert [(s["id"], s["relay_session"], s["open"], s["interface"]) for s in listed] == [
            (created["session"]["id"], "rs_1", True, "ga")
        ]
        assert await control.sessions("rs_other") == []
    assert (await control.session(created["session"]["id"]))["open"] is False


async def test_session_state_shows_config_conversation_and_traffic(
    sim: SimClient, sim_port: int, control: SimControl
) -> None:
    session_id = str(sim.events[0]["session"]["id"])
    await sim.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}})
    updated = (await sim.until("session.updated"))[-1]["session"]
    await sim.send(_user_text("first", id="item_first"))
    await sim.send(_user_text("zeroth", id="item_zeroth"))
    await sim.send({**_user_text("before first", id="item_root"), "previous_item_id": "root"})
    await sim.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    done = (await sim.until("response.done"))[-1]["response"]
    state = await control.session(session_id)
    assert state["config"] == updated
    assert [i["id"] for i in state["conversation"]] == [
        "item_root",
        "item_first",
        "item_zeroth",
        done["output"][0]["id"],
    ]
    assert state["conversation"][-1]["content"] == [{"type": "output_text", "text": "Hi there!"}]
    assert state["conversation"][1]["content"] == [{"type": "input_text", "text": "first"}]
    creates = ["conversation.item.create"] * 3
    assert state["received_types"] == ["session.update", *creates, "response.create"]
    assert orjson.loads(state["received"][0])["session"]["instructions"] == "Be brief."
    assert (state["open"], state["close_code"]) == (True, None)


async def test_close_code_is_recorded(sim_port: int, control: SimControl) -> None:
    async with websockets.connect(ws_url(sim_port), additional_headers=AUTH) as ws:
        session_id = orjson.loads(await ws.recv())["session"]["id"]
        await ws.close(code=1000)
    state = await control.session(session_id)
    assert (state["open"], state["close_code"]) == (False, 1000)


async def test_unknown_session_is_404(control: SimControl) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as missing:
        await control.session("sess_nope")
    assert missing.value.status == 404


async def test_scripted_replies_and_transcripts_are_used_in_order(
    sim: SimClient, control: SimControl
) -> None:
    await control.script(replies=["One.", "Two."], transcripts=["scripted words"])
    texts = []
    for _ in range(2):
        await sim.send(_user_text("hi"))
        await sim.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        done = (await sim.until("response.done"))[-1]["response"]
        texts.append(done["output"][0]["content"][0]["text"])
    assert texts == ["One.", "Two."]
    await sim.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": None}},
            },
        }
    )
    await sim.until("session.updated")
    await sim.send({"type": "input_audio_buffer.append", "audio": "AAAA" * 1600})  # 100 ms
    await sim.send({"type": "input_audio_buffer.commit"})
    events = await sim.until("conversation.item.input_audio_transcription.completed")
    deltas = [e["delta"] for e in events if e["type"].endswith("transcription.delta")]
    assert "".join(deltas) == events[-1]["transcript"] == "scripted words"
    assert events[-1]["usage"] == {"type": "duration", "seconds": 1}  # 100 ms, whole seconds


async def test_default_reply_echoes_the_user(sim_port: int, control: SimControl) -> None:
    from relay.simulator.config import SimulatorConfig
    from relay.simulator.server import start_simulator
    from relay.simulator.timing import Timing

    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), speed=100.0))
    try:
        async with websockets.connect(ws_url(port), additional_headers=AUTH) as ws:
            client = SimClient(ws)
            await client.until("session.created")
            await client.send(_user_text("what a day"))
            await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
            done = (await client.until("response.done"))[-1]["response"]
    finally:
        await runner.cleanup()
    assert done["output"][0]["content"][0]["text"] == "You said: what a day."


async def test_scripted_tool_arguments(sim: SimClient, control: SimControl) -> None:
    await control.script(tool_arguments={"city": "Oslo"})
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    session = {"type": "realtime", "tools": [tool], "tool_choice": "required"}
    await sim.send({"type": "session.update", "session": session})
    await sim.until("session.updated")
    await sim.send(_user_text("anything"))
    await sim.send({"type": "response.create"})
    events = await sim.until("response.done")
    call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert (call["name"], orjson.loads(call["arguments"])) == ("lookup", {"city": "Oslo"})


async def test_control_posts_must_be_json_so_a_web_page_cannot_steer_it(sim_port: int) -> None:
    """A page can POST text/plain across origins without a CORS preflight; JSON it cannot."""
    async with aiohttp.ClientSession() as http:
        body = '{"replies": ["injected"]}'
        plain = {"Content-Type": "text/plain"}
        async with http.post(f"http://127.0.0.1:{sim_port}/_sim/script", data=body, headers=plain) as resp:
            assert resp.status == 415


async def test_the_control_api_is_served_only_when_asked_for() -> None:
    from relay.simulator.config import SimulatorConfig
    from relay.simulator.server import start_simulator
    from relay.simulator.timing import Timing

    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), control_api=False))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/_sim/sessions") as resp:
                assert resp.status == 404
            async with http.post(f"http://127.0.0.1:{port}/_sim/faults", json={"clear": True}) as resp:
                assert resp.status in (404, 405)
    finally:
        await runner.cleanup()


async def test_a_closed_session_keeps_no_audio() -> None:
    """Closed sessions stay inspectable (up to max_sessions_kept of them) but drop their
    committed audio: 2000 closed sessions with ~8 MB each used to stay in memory."""
    import base64

    from relay.simulator.config import SimulatorConfig
    from relay.simulator.server import start_simulator
    from relay.simulator.timing import Timing

    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast()))
    simulator = next(r.handler.__self__ for r in runner.app.router.routes() if hasattr(r.handler, "__self__"))
    try:
        async with websockets.connect(ws_url(port), additional_headers=AUTH) as ws:
            created = orjson.loads(await ws.recv())
            update = {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
            }
            await ws.send(orjson.dumps(update).decode())
            audio = base64.b64encode(bytes(48000)).decode()
            await ws.send(orjson.dumps({"type": "input_audio_buffer.append", "audio": audio}).decode())
            await ws.send('{"type":"input_audio_buffer.commit"}')
            while orjson.loads(await ws.recv())["type"] != "conversation.item.done":
                pass
            record = simulator.records[created["session"]["id"]]
            assert record.session.input_audio_bytes == 48000  # kept while open (retrieve returns it)
        while record.open:  # noqa: ASYNC110 (the record has no event to wait on)
            await asyncio.sleep(0.01)
        assert record.session.input_audio == {}
        assert record.session.input_audio_bytes == 0
    finally:
        await runner.cleanup()
