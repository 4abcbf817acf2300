"""Phone calls through the relay: the call endpoints against the simulated API's SIP side.

An accept with tools is forwarded with the call's G.711 formats pinned, so the simulator's
reproduction of the live API's old format reset (F4) cannot turn the caller's audio into static;
bad accepts are refused before the call sees them; reject, refer and hangup pass through with the
API's statuses; the provider key never reaches a response or a log.

The call's control socket (``?call_id=``) goes through the relay with validation, the hold and
the formats pinned; when it drops upstream the relay reattaches to the same call, replaying
nothing, and the app's socket never notices.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from aiohttp import web
from websockets.exceptions import InvalidStatus

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory, RelayHandle
from tests.support.relay_process import clean_env, free_port, wait_listening

PCM = {"type": "audio/pcm", "rate": 24000}
PCMU = {"type": "audio/pcmu"}
PCMA = {"type": "audio/pcma"}
END_CALL = {
    "type": "function",
    "name": "end_call",
    "description": "Ends the call upon the completion of the current response.",
    "parameters": {"type": "object", "properties": {}, "required": []},
}
# The accept from the forum report whose callers heard static (F4).
FORUM_ACCEPT = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You're a friendly bot talking to someone on a phone call.",
    "tools": [END_CALL],
}


class Phone:
    """The simulator's control API and the relay's call endpoints, side by side."""

    def __init__(self, sim_port: int, relay: RelayHandle, http: aiohttp.ClientSession) -> None:
        self.sim = f"http://127.0.0.1:{sim_port}"
        self.sim_port = sim_port
        self.relay = relay
        self.http = http

    async def ring(self, **options: Any) -> str:
        async with self.http.post(self.sim + "/_sim/calls", json=options) as resp:
            return str((await resp.json())["call_id"])

    async def state(self, call_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.sim}/_sim/calls/{call_id}") as resp:
            return dict(await resp.json())

    async def caller_says(self, call_id: str, text: str) -> None:
        async with self.http.post(f"{self.sim}/_sim/calls/{call_id}/caller", json={"say": text}) as resp:
            assert resp.status == 200

    async def relay_call(
        self, call_id: str, action: str, body: Any = None, *, raw: bytes | None = None, headers: Any = None
    ) -> tuple[int, Any]:
        """POST to the relay's call endpoint, as an app's server does."""
        url = f"{self.relay.http_url}/v1/realtime/calls/{call_id}/{action}"
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        sent = {**(self.relay.auth if headers is None else headers), "Content-Type": "application/json"}
        async with self.http.post(url, data=data, headers=sent) as resp:
            payload = await resp.read()
            return resp.status, orjson.loads(payload) if payload else None

    async def direct_call(self, call_id: str, action: str, body: Any = None) -> tuple[int, Any]:
        """The same request straight to the simulated API, without the relay."""
        url = f"{self.sim}/v1/realtime/calls/{call_id}/{action}"
        async with self.http.post(url, json=body, headers={"Authorization": "Bearer sk-x"}) as resp:
            payload = await resp.read()
            return resp.status, orjson.loads(payload) if payload else None

    async def greet(self, call_id: str) -> None:
        """Have the model speak on the call, over a control socket straight to the simulated API."""
        url = f"ws://127.0.0.1:{self.sim_port}/v1/realtime?call_id={call_id}"
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer sk-x"}) as ws:
            await ws.send(orjson.dumps({"type": "response.create"}).decode())
            async with asyncio.timeout(10):
                while orjson.loads(await ws.recv())["type"] != "output_audio_buffer.stopped":
                    pass

    async def until(self, call_id: str, check: Any, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while not check(state := await self.state(call_id)):  # noqa: ASYNC110 - another server's
                await asyncio.sleep(0.02)
        return state


async def _phone(start_relay: RelayFactory, config: SimulatorConfig, **settings: Any) -> AsyncIterator[Phone]:
    runner, port = await start_simulator(config)
    relay = await start_relay(
        upstream="simulator", upstream_url=f"ws://127.0.0.1:{port}/v1/realtime", **settings
    )
    async with aiohttp.ClientSession() as http:
        yield Phone(port, relay, http)
    await runner.cleanup()


def _config(**extra: Any) -> SimulatorConfig:
    return SimulatorConfig(timing=Timing.fast(), speed=100.0, reply_text="Goodbye.", **extra)


@pytest.fixture
async def phone(start_relay: RelayFactory) -> AsyncIterator[Phone]:
    async for handle in _phone(start_relay, _config()):
        yield handle


@pytest.fixture
async def old_api(start_relay: RelayFactory) -> AsyncIterator[Phone]:
    """The simulated API with the live API's old behaviour: tools without formats reset to PCM."""
    async for handle in _phone(start_relay, _config(call_format_reset=True)):
        yield handle


# ---------------------------------------------------------------------- accept, pinned
async def test_an_accept_with_tools_is_forwarded_with_the_calls_formats(phone: Phone) -> None:
    call_id = await phone.ring()
    assert await phone.relay_call(call_id, "accept", FORUM_ACCEPT) == (200, None)
    state = await phone.state(call_id)
    assert state["requests"] == [{"action": "accept", "status": 200}]
    config = state["config"]
    assert config["tools"] == [END_CALL]
    assert config["instructions"] == FORUM_ACCEPT["instructions"]
    assert config["audio"]["input"]["format"] == PCMU
    assert config["audio"]["output"]["format"] == PCMU
    relay = phone.relay
    assert relay.metric("relay_call_format_fills_total", {"where": "accept"}) == 1
    assert relay.metric("relay_call_requests_total", {"action": "accept", "result": "ok"}) == 1


async def test_the_relay_guards_the_call_against_the_apis_format_reset(old_api: Phone) -> None:
    """The old API reset a call with tools to PCM (callers heard static); through the relay the
    same accept keeps the call on G.711 and the caller hears the answer clearly."""
    direct = await old_api.ring()
    assert await old_api.direct_call(direct, "accept", FORUM_ACCEPT) == (200, None)
    assert (await old_api.state(direct))["config"]["audio"]["output"]["format"] == PCM
    guarded = await old_api.ring()
    assert await old_api.relay_call(guarded, "accept", FORUM_ACCEPT) == (200, None)
    assert (await old_api.state(guarded))["config"]["audio"]["output"]["format"] == PCMU
    for call_id in (direct, guarded):
        await old_api.caller_says(call_id, "Hello, is anyone there?")
        await old_api.greet(call_id)  # the app's control socket (to the API: see below)
    direct_line = (await old_api.state(direct))["line"]
    guarded_line = (await old_api.state(guarded))["line"]
    assert direct_line["static_ms"] == direct_line["played_ms"] > 0  # all noise, both ways
    assert direct_line["caller_static_ms"] == direct_line["caller_ms"] > 0
    assert guarded_line["played_ms"] > 0
    assert guarded_line["static_ms"] == guarded_line["caller_static_ms"] == 0


async def test_a_call_accepted_on_pcma_stays_on_pcma(phone: Phone) -> None:
    call_id = await phone.ring(line_format="audio/pcma")
    body = {"type": "realtime", "tools": [END_CALL], "audio": {"input": {"format": PCMA}}}
    assert await phone.relay_call(call_id, "accept", body) == (200, None)
    audio = (await phone.state(call_id))["config"]["audio"]
    assert (audio["input"]["format"], audio["output"]["format"]) == (PCMA, PCMA)


async def test_filling_can_be_switched_off(start_relay: RelayFactory) -> None:
    async for phone in _phone(start_relay, _config(call_format_reset=True), calls_fill_formats=False):
        call_id = await phone.ring()
        assert await phone.relay_call(call_id, "accept", FORUM_ACCEPT) == (200, None)
        assert (await phone.state(call_id))["config"]["audio"]["output"]["format"] == PCM  # as sent
        status, body = await phone.relay_call(
            await phone.ring(), "accept", {**FORUM_ACCEPT, "audio": {"output": {"format": PCM}}}
        )
        assert (status, body["error"]["param"]) == (400, "audio.output.format.type")  # PCM: still refused


# ---------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("body", "code", "param", "words"),
    [
        (
            {**FORUM_ACCEPT, "audio": {"output": {"format": PCM}}},
            "invalid_value",
            "audio.output.format.type",
            "static",
        ),
        (
            {"type": "realtime", "tools": [{"type": "web_search"}]},
            "invalid_value",
            "tools[0].type",
            "Responses API",
        ),
        ({"instructions": "Hi"}, "missing_required_parameter", "type", '"type": "realtime"'),
        ({"type": "realtime", "voice": "marin"}, "unknown_parameter", "voice", "audio.output.voice"),
        ({"type": "realtime", "bogus": True}, "unknown_parameter", "bogus", "Unknown parameter: 'bogus'."),
        ({"type": "transcription"}, "invalid_value", "type", "Supported values are: 'realtime'"),
    ],
    ids=["pcm", "web_search", "missing_type", "beta_field", "unknown_key", "transcription"],
)
async def test_a_bad_accept_never_reaches_the_call(
    phone: Phone, body: dict[str, Any], code: str, param: str, words: str
) -> None:
    call_id = await phone.ring()
    status, answer = await phone.relay_call(call_id, "accept", body)
    assert status == 400
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert (answer["error"]["type"], answer["error"]["code"], answer["error"]["param"]) == (
        "invalid_request_error",
        code,
        param,
    )
    assert words in answer["error"]["message"]
    state = await phone.state(call_id)
    assert (state["status"], state["requests"]) == ("ringing", [])
    assert phone.relay.metric("relay_call_requests_total", {"action": "accept", "result": "refused"}) == 1


async def test_unreadable_bodies_and_call_ids(phone: Phone) -> None:
    call_id = await phone.ring()
    status, answer = await phone.relay_call(call_id, "accept", raw=b"{not json")
    assert (status, answer["error"]["code"]) == (400, None)
    assert answer["error"]["message"].startswith("We could not parse the JSON body")
    status, answer = await phone.relay_call(call_id, "accept", ["type", "realtime"])
    assert (status, answer["error"]["code"]) == (400, "invalid_type")
    status, answer = await phone.relay_call("rtc.evil%2F..", "hangup")
    assert (status, answer["error"]["param"]) == (400, "call_id")
    assert (await phone.state(call_id))["requests"] == []


async def test_call_endpoints_admit_like_the_websocket(phone: Phone) -> None:
    call_id = await phone.ring()
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        status, answer = await phone.relay_call(call_id, "accept", FORUM_ACCEPT, headers=headers)
        assert status == 401
        assert answer["error"]["type"] == "relay_rejection"
    assert (await phone.state(call_id))["requests"] == []
    assert (
        phone.relay.metric("relay_call_requests_total", {"action": "accept", "result": "unauthorized"}) == 2
    )


async def test_failed_authentications_share_the_websockets_budget(start_relay: RelayFactory) -> None:
    async for phone in _phone(start_relay, _config(), auth_failures_per_s=0.01, auth_failure_burst=2):
        call_id = await phone.ring()
        for _ in range(2):
            assert (await phone.relay_call(call_id, "hangup", headers={"Authorization": "Bearer no"}))[
                0
            ] == 401
        status, answer = await phone.relay_call(call_id, "hangup")  # even the right token, for now
        assert (status, answer["error"]["code"]) == (429, "auth_rate_limited")
        with pytest.raises(InvalidStatus) as caught:
            async with websockets.connect(
                phone.relay.ws_url + "?model=gpt-realtime", additional_headers=phone.relay.auth
            ):
                pass
        assert caught.value.response.status_code == 429


# ---------------------------------------------------------------------- passed through
async def test_reject_refer_and_hangup_pass_through_with_the_apis_statuses(phone: Phone) -> None:
    busy = await phone.ring()
    assert await phone.relay_call(busy, "reject", {"status_code": 486}) == (200, None)
    assert (await phone.state(busy))["rejected_with"] == 486

    transferred = await phone.ring()
    assert (await phone.relay_call(transferred, "refer", {"target_uri": "tel:+14155550123"}))[0] == 400
    assert await phone.relay_call(transferred, "accept", FORUM_ACCEPT) == (200, None)
    assert await phone.relay_call(transferred, "refer", {"target_uri": "tel:+14155550123"}) == (200, None)
    assert (await phone.state(transferred))["referred_to"] == "tel:+14155550123"

    ended = await phone.ring()
    assert await phone.relay_call(ended, "accept", FORUM_ACCEPT) == (200, None)
    assert await phone.relay_call(ended, "hangup") == (200, None)
    relayed = await phone.relay_call(ended, "hangup")
    assert relayed == await phone.direct_call(ended, "hangup")  # 400 call_id_not_found, as the API says it
    assert relayed[0] == 400

    unknown = await phone.relay_call("rtc_0000", "accept", FORUM_ACCEPT)
    assert unknown[0] == 404
    assert unknown[1]["error"]["code"] == "call_id_not_found"
    twice = await phone.relay_call(transferred, "accept", FORUM_ACCEPT)
    assert twice[0] == 400
    metric = phone.relay.metric
    assert metric("relay_call_requests_total", {"action": "hangup", "result": "upstream_4xx"}) == 1
    assert metric("relay_call_requests_total", {"action": "reject", "result": "ok"}) == 1


async def test_an_unreachable_upstream_is_a_502(start_relay: RelayFactory) -> None:
    relay = await start_relay(upstream="simulator", upstream_url=f"ws://127.0.0.1:{free_port()}/v1/realtime")
    async with aiohttp.ClientSession() as http:
        url = f"{relay.http_url}/v1/realtime/calls/rtc_1/hangup"
        async with http.post(url, headers=relay.auth) as resp:
            assert resp.status == 502
            assert (await resp.json())["error"]["code"] == "upstream_unreachable"


async def test_azure_upstreams_get_the_v1_call_endpoints_and_the_api_key(start_relay: RelayFactory) -> None:
    key = "azure-key-0123456789abcdef"
    runner, port = await start_simulator(_config(api_keys=(key,)))
    try:
        async with aiohttp.ClientSession() as http:
            for preview in (None, "2025-04-01-preview"):  # the preview form's calls are v1 too
                relay = await start_relay(
                    upstream="azure",
                    azure_openai_endpoint=f"http://127.0.0.1:{port}",
                    azure_openai_api_key=key,
                    azure_api_version=preview,
                )
                phone = Phone(port, relay, http)
                call_id = await phone.ring()
                assert await phone.relay_call(call_id, "accept", FORUM_ACCEPT) == (200, None)
                assert (await phone.state(call_id))["config"]["audio"]["input"]["format"] == PCMU
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------- the control socket
@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?call_id=rtc_1&model=gpt-realtime", "call_id_conflict"),
        ("?call_id=rtc_1&intent=transcription", "call_id_conflict"),
        ("?call_id=a%2F..", "invalid_call_id"),
        ("?call_id=", "invalid_call_id"),
    ],
    ids=["with_model", "with_transcription", "path_chars", "empty"],
)
async def test_control_socket_admission(phone: Phone, query: str, code: str) -> None:
    url = f"ws://127.0.0.1:{phone.relay.server.port}/v1/realtime{query}"
    with pytest.raises(InvalidStatus) as caught:
        async with websockets.connect(url, additional_headers=phone.relay.auth):
            pass
    assert caught.value.response.status_code == 400
    assert orjson.loads(caught.value.response.body)["error"]["code"] == code


async def test_control_sockets_need_credentials_and_calls_enabled(start_relay: RelayFactory) -> None:
    async for phone in _phone(start_relay, _config(), calls_enabled=False):
        url = f"ws://127.0.0.1:{phone.relay.server.port}/v1/realtime?call_id=rtc_1"
        for headers, status in (({}, 401), (phone.relay.auth, 403)):
            with pytest.raises(InvalidStatus) as caught:
                async with websockets.connect(url, additional_headers=headers):
                    pass
            assert caught.value.response.status_code == status
        url = f"{phone.relay.http_url}/v1/realtime/calls/{await phone.ring()}/accept"
        async with phone.http.post(url, json=FORUM_ACCEPT, headers=phone.relay.auth) as resp:
            assert resp.status == 404  # no call routes


async def test_control_socket_through_the_relay(old_api: Phone) -> None:
    call_id = await old_api.ring()
    assert await old_api.relay_call(call_id, "accept", {"type": "realtime"}) == (200, None)
    url = f"ws://127.0.0.1:{old_api.relay.server.port}/v1/realtime?call_id={call_id}"
    async with websockets.connect(url, additional_headers=old_api.relay.auth) as ws:
        created = orjson.loads(await ws.recv())
        assert created["session"]["audio"]["output"]["format"] == PCMU
        # tools without formats: the old API would reset the call to PCM; the relay pins it
        await ws.send(
            orjson.dumps(
                {"type": "session.update", "session": {"type": "realtime", "tools": [END_CALL]}}
            ).decode()
        )
        while (event := orjson.loads(await ws.recv()))["type"] != "session.updated":
            pass
        assert event["session"]["audio"]["output"]["format"] == PCMU
        pcm = {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"output": {"format": PCM}}},
        }
        await ws.send(orjson.dumps(pcm).decode())
        error = orjson.loads(await ws.recv())
        assert (error["type"], error["error"]["param"]) == ("error", "session.audio.output.format.type")
    # the app's socket is gone; the call is not
    assert (await old_api.until(call_id, lambda s: s["control_sockets"] == 0))["status"] == "accepted"


async def test_a_whole_call_with_a_tool_call_and_a_dropped_control_socket(old_api: Phone) -> None:
    """Accept with tools, the control socket through the relay, the caller speaks, the model
    calls a tool; the upstream control socket drops mid-call: the relay attaches a new one to the
    same call (no replay: the call's session is the API's), and the app hangs up."""
    call_id = await old_api.ring()
    assert await old_api.relay_call(call_id, "accept", FORUM_ACCEPT) == (200, None)
    url = f"ws://127.0.0.1:{old_api.relay.server.port}/v1/realtime?call_id={call_id}"
    async with websockets.connect(url, additional_headers=old_api.relay.auth) as ws:
        events: list[dict[str, Any]] = []

        async def until(event_type: str) -> dict[str, Any]:
            async with asyncio.timeout(10):
                while True:
                    event = orjson.loads(await ws.recv())
                    events.append(event)
                    if event["type"] == event_type:
                        return event

        created = await until("session.created")
        assert created["session"]["audio"]["input"]["format"] == PCMU
        await ws.send(orjson.dumps({"type": "response.create"}).decode())  # the greeting
        await until("response.done")
        await old_api.caller_says(call_id, "Hello, I would like to end this call.")
        await until("input_audio_buffer.committed")  # the API's VAD heard the line
        await until("response.done")  # and answered by itself

        before = await old_api.state(call_id)
        await old_api.http.post(f"{old_api.sim}/_sim/calls/{call_id}/caller", json={"drop_sockets": True})
        await _replaced(old_api.relay)
        state = await old_api.until(call_id, lambda s: s["control_sockets"] == 1)
        assert state["status"] == "accepted"
        assert state["sockets_opened"] == 2
        assert state["conversation"] == before["conversation"]  # nothing replayed into the call
        assert state["config"] == before["config"]
        # The app carries on through the same socket: the model is asked to use its tool.
        await ws.send(
            orjson.dumps({"type": "response.create", "response": {"tool_choice": "required"}}).decode()
        )
        done = await until("response.done")
        calls = [o for o in done["response"]["output"] if o["type"] == "function_call"]
        assert calls
        assert calls[0]["name"] == "end_call"
        assert [e["type"] for e in events].count("session.created") == 1
        assert not [e for e in events if e["type"] == "error"]
    assert await old_api.relay_call(call_id, "hangup") == (200, None)
    state = await old_api.until(call_id, lambda s: s["status"] != "accepted")
    assert state["line"]["static_ms"] == 0


async def _replaced(relay: RelayHandle) -> None:
    async with asyncio.timeout(10):
        while relay.metric("relay_upstream_replacements_total", {"cause": "1006"}) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- secrets
PROVIDER_KEY = "sk-proj-CALLSsecret0123456789abcdefghij"
CLIENT_TOKEN = "calls-client-token-0123456789"


async def _quoting_upstream() -> tuple[web.AppRunner, int]:
    """An upstream that quotes the key it was sent back in its answers, whole and masked."""

    async def answer(request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        message = f"Incorrect API key provided: {key[:8]}***{key[-4:]}. Full: {key}"
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
        return web.json_response(body, status=401, headers={"X-Echo": key})

    app = web.Application()
    app.router.add_post("/v1/realtime/calls/{call_id}/{action}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def test_the_provider_key_never_reaches_a_response_or_a_log() -> None:
    upstream, upstream_port = await _quoting_upstream()
    port = free_port()
    env = clean_env(
        OPENAI_API_KEY=PROVIDER_KEY,
        RELAY_UPSTREAM="openai",
        RELAY_UPSTREAM_URL=f"ws://127.0.0.1:{upstream_port}/v1/realtime",
        RELAY_PORT=str(port),
        RELAY_CLIENT_TOKENS=CLIENT_TOKEN,
        RELAY_LOG_LEVEL="DEBUG",
        RELAY_DRAIN_GRACE_S="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    produced: list[bytes] = []
    try:
        await wait_listening(port, proc)
        async with aiohttp.ClientSession() as http:
            for action, body in (
                ("accept", FORUM_ACCEPT),
                ("reject", {}),
                ("refer", {"target_uri": "tel:1"}),
                ("hangup", None),
            ):
                url = f"http://127.0.0.1:{port}/v1/realtime/calls/rtc_1/{action}"
                headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
                async with http.post(url, json=body, headers=headers) as resp:
                    assert resp.status == 401
                    produced += [await resp.read(), repr(dict(resp.headers)).encode()]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        await upstream.cleanup()
    produced += [out, err]
    blob = b"\n".join(produced)
    assert b"invalid_api_key" in blob  # the upstream's answers did come back
    assert b"call_request" in blob  # and were logged
    for fragment in (PROVIDER_KEY, PROVIDER_KEY[-12:], PROVIDER_KEY[8:20], CLIENT_TOKEN):
        assert fragment.encode() not in blob, f"{fragment!r} leaked"
