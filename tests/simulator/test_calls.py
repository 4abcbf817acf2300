"""Simulated phone calls: the webhook, the call endpoints' statuses and errors, the control socket,
the caller on the line, the live API's old format reset (F4), and a call outliving its sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from openai import OpenAI
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent
from websockets.exceptions import ConnectionClosed, InvalidStatus

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.simulator.conftest import AUTH, SimClient

PCM = {"type": "audio/pcm", "rate": 24000}
PCMU = {"type": "audio/pcmu"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ACCEPT = {"type": "realtime", "model": "gpt-realtime", "instructions": "Be brief.", "tools": [WEATHER]}
SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="


class Sim:
    """The simulator over HTTP: its call endpoints as an app calls them, and its control API."""

    def __init__(self, port: int, http: aiohttp.ClientSession) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.http = http

    async def call(self, **options: Any) -> dict[str, Any]:
        async with self.http.post(self.base + "/_sim/calls", json=options) as resp:
            assert resp.status == 201
            return dict(await resp.json())

    async def act(self, call_id: str, action: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = kw.get("headers", AUTH)
        path = kw.get("path", "/v1/realtime/calls")
        url = f"{self.base}{path}/{call_id}/{action}"
        async with self.http.post(url, json=body, headers=headers) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else None

    async def state(self, call_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.base}/_sim/calls/{call_id}") as resp:
            return dict(await resp.json())

    async def caller(self, call_id: str, **body: Any) -> None:
        async with self.http.post(f"{self.base}/_sim/calls/{call_id}/caller", json=body) as resp:
            assert resp.status == 200, await resp.text()

    def socket(self, call_id: str) -> Any:
        url = f"ws://127.0.0.1:{self.port}/v1/realtime?call_id={call_id}"
        return websockets.connect(url, additional_headers=AUTH, max_size=None)

    async def until(self, call_id: str, check: Any, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                state = await self.state(call_id)
                if check(state):
                    return state
                await asyncio.sleep(0.02)


async def _sim(config: SimulatorConfig) -> AsyncIterator[Sim]:
    runner, port = await start_simulator(config)
    async with aiohttp.ClientSession() as http:
        yield Sim(port, http)
    await runner.cleanup()


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async for handle in _sim(SimulatorConfig(timing=Timing.fast(), speed=100.0, reply_text="Sunny.")):
        yield handle


@pytest.fixture
async def legacy_sim() -> AsyncIterator[Sim]:
    config = SimulatorConfig(timing=Timing.fast(), speed=100.0, reply_text="Sunny.", call_format_reset=True)
    async for handle in _sim(config):
        yield handle


async def _accepted(sim: Sim, body: dict[str, Any] | None = None, **options: Any) -> str:
    call_id = str((await sim.call(**options))["call_id"])
    assert await sim.act(call_id, "accept", body or ACCEPT) == (200, None)
    return call_id


# ---------------------------------------------------------------------- the webhook
async def test_an_incoming_call_is_a_signed_realtime_call_incoming_webhook(sim: Sim) -> None:
    created = await sim.call(webhook_secret=SECRET)
    call_id = created["call_id"]
    assert call_id.startswith("rtc_")
    event = RealtimeCallIncomingWebhookEvent.model_validate(created["event"])
    assert (event.type, event.data.call_id) == ("realtime.call.incoming", call_id)
    assert [h.name for h in event.data.sip_headers] == ["From", "To", "Call-ID"]
    webhook = created["webhook"]
    assert orjson.loads(webhook["body"]) == created["event"]
    verified = OpenAI(api_key="unused", webhook_secret=SECRET).webhooks.unwrap(
        webhook["body"], webhook["headers"]
    )
    assert verified.type == "realtime.call.incoming"
    with pytest.raises(Exception, match="signature"):
        OpenAI(api_key="unused").webhooks.unwrap(webhook["body"], webhook["headers"], secret="whsec_b3RoZXI=")
    assert (await sim.state(call_id))["status"] == "ringing"


# ---------------------------------------------------------------------- statuses and errors
async def test_accept_answers_200_without_a_body_and_configures_the_call(sim: Sim) -> None:
    call_id = await _accepted(sim)
    state = await sim.state(call_id)
    assert state["status"] == "accepted"
    assert state["config"]["tools"] == [WEATHER]
    # the call's line is G.711: a body that names no format gets the line's, both ways
    assert state["config"]["audio"]["input"]["format"] == PCMU
    assert state["config"]["audio"]["output"]["format"] == PCMU
    assert state["requests"] == [{"action": "accept", "status": 200}]


async def test_call_endpoint_errors(sim: Sim) -> None:
    unknown = await sim.act("rtc_nope", "accept", ACCEPT)
    assert unknown[0] == 404
    assert unknown[1]["error"]["code"] == "call_id_not_found"
    call_id = await _accepted(sim)
    twice = await sim.act(call_id, "accept", ACCEPT)
    assert (twice[0], twice[1]["error"]["code"]) == (400, "call_already_accepted")
    late_reject = await sim.act(call_id, "reject", {"status_code": 486})
    assert (late_reject[0], late_reject[1]["error"]["code"]) == (400, "call_already_accepted")
    no_target = await sim.act(call_id, "refer", {})
    assert no_target[0] == 400
    assert (no_target[1]["error"]["code"], no_target[1]["error"]["param"]) == (
        "missing_required_parameter",
        "target_uri",
    )
    assert await sim.act(call_id, "hangup") == (200, None)
    again = await sim.act(call_id, "hangup")
    assert again[0] == 400
    assert again[1]["error"] == {
        "message": f"Call '{call_id}' has ended.",
        "type": "invalid_request_error",
        "param": None,
        "code": "call_id_not_found",
    }
    ringing = (await sim.call())["call_id"]
    early_refer = await sim.act(ringing, "refer", {"target_uri": "tel:+14155550123"})
    assert (early_refer[0], early_refer[1]["error"]["code"]) == (400, "call_not_active")


async def test_an_invalid_accept_is_refused_and_the_call_keeps_ringing(sim: Sim) -> None:
    call_id = (await sim.call())["call_id"]
    status, body = await sim.act(call_id, "accept", {"type": "realtime", "tools": [{"type": "web_search"}]})
    assert status == 400
    assert (body["error"]["code"], body["error"]["param"]) == ("invalid_value", "tools[0].type")
    assert (await sim.state(call_id))["status"] == "ringing"


async def test_reject_with_a_status_code_and_by_default(sim: Sim) -> None:
    busy = (await sim.call())["call_id"]
    assert await sim.act(busy, "reject", {"status_code": 486}) == (200, None)
    state = await sim.state(busy)
    assert (state["status"], state["rejected_with"]) == ("rejected", 486)
    declined = (await sim.call())["call_id"]
    assert await sim.act(declined, "reject") == (200, None)
    assert (await sim.state(declined))["rejected_with"] == 603


async def test_refer_transfers_and_ends_the_call(sim: Sim) -> None:
    call_id = await _accepted(sim)
    assert await sim.act(call_id, "refer", {"target_uri": "sip:agent@example.com"}) == (200, None)
    state = await sim.state(call_id)
    assert (state["status"], state["referred_to"]) == ("referred", "sip:agent@example.com")


async def test_call_endpoints_need_the_key_like_every_api_request() -> None:
    key = "sk-proj-simulatorKey0123456789"
    config = SimulatorConfig(timing=Timing.fast(), api_keys=(key,))
    async for sim in _sim(config):
        call_id = (await sim.call())["call_id"]
        missing = await sim.act(call_id, "accept", ACCEPT, headers={})
        assert (missing[0], missing[1]["error"]["code"]) == (401, None)
        wrong = await sim.act(
            call_id, "accept", ACCEPT, headers={"Authorization": "Bearer sk-proj-wrong0000000000"}
        )
        assert (wrong[0], wrong[1]["error"]["code"]) == (401, "invalid_api_key")
        assert "Incorrect API key provided: sk-proj-" in wrong[1]["error"]["message"]
        azure = await sim.act(
            call_id, "accept", ACCEPT, headers={"api-key": key}, path="/openai/v1/realtime/calls"
        )
        assert azure == (200, None)


# ---------------------------------------------------------------------- the control socket
async def test_the_control_socket_joins_the_calls_session(sim: Sim) -> None:
    call_id = await _accepted(sim, {**ACCEPT, "audio": {"input": {"transcription": {"model": "whisper-1"}}}})
    async with sim.socket(call_id) as ws:
        client = SimClient(ws)
        created = await client.next()
        assert created["type"] == "session.created"
        assert created["session"]["tools"] == [WEATHER]
        assert created["session"]["audio"]["output"]["format"] == PCMU
        await sim.caller(call_id, say="What is the weather in Paris?")
        events = await client.until("response.done")
        kinds = [e["type"] for e in events]
        assert "input_audio_buffer.speech_started" in kinds
        assert "conversation.item.input_audio_transcription.completed" in kinds
        # the model calls the tool; the app answers it on the control socket
        call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert call["name"] == "get_weather"
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"sky": "sunny"}'}
        await client.send({"type": "conversation.item.create", "item": output})
        await client.send({"type": "response.create"})
        spoken = await client.until("output_audio_buffer.stopped")
    kinds = [e["type"] for e in spoken]
    # audio goes to the caller's line, not to the socket; the socket hears that it played
    assert "response.output_audio.delta" not in kinds
    assert kinds.index("output_audio_buffer.started") < kinds.index("response.done")
    line = (await sim.state(call_id))["line"]
    assert line["played_ms"] > 0
    assert line["static_ms"] == 0
    assert line["caller_static_ms"] == 0


async def test_sockets_for_unknown_ringing_or_ended_calls_get_404(sim: Sim) -> None:
    ringing = (await sim.call())["call_id"]
    for call_id in ("rtc_unknown", ringing):
        with pytest.raises(InvalidStatus) as caught:
            async with sim.socket(call_id):
                pass
        assert caught.value.response.status_code == 404
        assert b"call_id_not_found" in caught.value.response.body
    ended = await _accepted(sim)
    await sim.act(ended, "hangup")
    with pytest.raises(InvalidStatus):
        async with sim.socket(ended):
            pass


async def test_dropping_the_control_socket_does_not_end_the_call(sim: Sim) -> None:
    call_id = await _accepted(sim)
    async with sim.socket(call_id) as ws:
        first = SimClient(ws)
        session_id = (await first.next())["session"]["id"]
    # no socket: the caller still talks to the model, which still answers on the line
    state = await sim.until(call_id, lambda s: s["control_sockets"] == 0)
    assert state["status"] == "accepted"
    await sim.caller(call_id, say="Hello, anyone there?")
    state = await sim.until(call_id, lambda s: s["line"]["played_ms"] > 0 and len(s["conversation"]) >= 2)
    assert state["status"] == "accepted"
    # a new socket joins the same session, with what happened meanwhile
    async with sim.socket(call_id) as ws:
        again = SimClient(ws)
        created = await again.next()
        assert created["session"]["id"] == session_id
        await again.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        done = (await again.until("response.done"))[-1]
        assert done["response"]["status"] == "completed"
    assert (await sim.state(call_id))["sockets_opened"] == 2


async def test_a_hangup_closes_every_socket_at_once(sim: Sim) -> None:
    call_id = await _accepted(sim)
    async with sim.socket(call_id) as one, sim.socket(call_id) as two:
        await one.recv()
        await two.recv()
        await sim.caller(call_id, hangup=True)
        for ws in (one, two):
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
    state = await sim.state(call_id)
    assert (state["status"], state["ended_by"], state["control_sockets"]) == ("ended", "caller", 0)
    assert (await sim.act(call_id, "hangup"))[0] == 400


# ---------------------------------------------------------------------- the old format reset (F4)
async def test_the_old_api_reset_a_call_with_tools_to_pcm_and_the_caller_heard_static(
    legacy_sim: Sim,
) -> None:
    call_id = await _accepted(legacy_sim)  # tools, no formats: the forum report's accept
    state = await legacy_sim.state(call_id)
    assert state["config"]["audio"]["output"]["format"] == PCM
    async with legacy_sim.socket(call_id) as ws:
        client = SimClient(ws)
        await client.next()
        await client.send({"type": "response.create", "response": {"instructions": "Greet the caller."}})
        await client.until("output_audio_buffer.stopped")
    line = (await legacy_sim.state(call_id))["line"]
    assert line["static_ms"] == line["played_ms"] > 0


async def test_the_old_reset_spared_a_body_that_named_the_formats(legacy_sim: Sim) -> None:
    named = {**ACCEPT, "audio": {"input": {"format": PCMU}, "output": {"format": PCMU}}}
    call_id = await _accepted(legacy_sim, named)
    assert (await legacy_sim.state(call_id))["config"]["audio"]["output"]["format"] == PCMU
    plain = await _accepted(legacy_sim, {"type": "realtime", "instructions": "No tools."})
    assert (await legacy_sim.state(plain))["config"]["audio"]["input"]["format"] == PCMU


async def test_the_old_reset_on_a_session_update_with_tools(sim: Sim) -> None:
    call_id = await _accepted(sim, {"type": "realtime"}, format_reset=True)
    async with sim.socket(call_id) as ws:
        client = SimClient(ws)
        assert (await client.next())["session"]["audio"]["input"]["format"] == PCMU
        await client.send({"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER]}})
        updated = (await client.until("session.updated"))[-1]["session"]
    assert updated["audio"]["input"]["format"] == PCM
    await sim.caller(call_id, say="Can you hear me?")
    line = (await sim.state(call_id))["line"]
    assert line["caller_static_ms"] == line["caller_ms"] > 0


async def test_the_old_api_took_an_invalid_accept_with_its_default_pcm_session(legacy_sim: Sim) -> None:
    call_id = (await legacy_sim.call())["call_id"]
    bad = {"type": "realtime", "tools": [{"type": "web_search"}]}
    assert await legacy_sim.act(call_id, "accept", bad) == (200, None)
    config = (await legacy_sim.state(call_id))["config"]
    assert config["audio"]["input"]["format"] == PCM
    assert config["tools"] == []


async def test_without_the_reset_a_session_update_keeps_the_calls_formats(sim: Sim) -> None:
    call_id = await _accepted(sim, {"type": "realtime"})
    async with sim.socket(call_id) as ws:
        client = SimClient(ws)
        await client.next()
        await client.send({"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER]}})
        updated = (await client.until("session.updated"))[-1]["session"]
    assert updated["audio"]["input"]["format"] == PCMU
    assert updated["tools"] == [WEATHER]
