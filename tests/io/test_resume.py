"""The app's own connection drops (a phone changing networks, a tab put to sleep) and it resumes.

Against the simulator with the live API's timing: a client whose TCP connection is cut in the
middle of a spoken answer comes back with its resume token and the id of the last event it
processed, and must get every later event exactly once, in order, no second ``session.created``,
and a conversation that goes on. Refusals happen at the upgrade, with a JSON reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import websockets

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import TOKEN, RelayFactory, RelayHandle
from tests.support.conversation import Event, RecordingClient, assert_one_stream, text_item
from tests.support.sim_control import SimControl

OTHER_TOKEN = "relay-test-other-token-9876543210"
REALISTIC = SimulatorConfig(speed=20.0, timing=Timing.realistic())
LONG_ANSWER = " ".join(f"word{i}" for i in range(120))


@dataclass
class Rig:
    relay: RelayHandle
    sim: SimControl

    async def client(self, token: str = TOKEN) -> RecordingClient:
        client = await RecordingClient.connect(self.relay.ws_url + "?relay_resume=1", token)
        await client.wait_for("session.created")
        return client


@pytest.fixture
async def rig(start_relay: RelayFactory, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    runner, port = await start_simulator(REALISTIC)
    overrides: dict[str, Any] = getattr(request, "param", {})
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        client_tokens=[TOKEN, OTHER_TOKEN],
        rotate_after_s=0,
        **overrides,
    )
    yield Rig(relay, SimControl(f"http://127.0.0.1:{port}"))
    await runner.cleanup()


def _token(client: RecordingClient) -> str:
    token = client.resume_token()
    assert client.ws.response is not None
    assert client.ws.response.headers["X-Relay-Resume-Token"] == token
    return token


async def _resume(rig: Rig, token: str, last_event_id: str | None, auth: str = TOKEN) -> RecordingClient:
    headers = {"Authorization": f"Bearer {auth}", "X-Relay-Resume-Token": token}
    if last_event_id:
        headers["X-Relay-Last-Event-Id"] = last_event_id
    ws = await websockets.connect(
        rig.relay.ws_url + "?relay_resume=1", additional_headers=headers, max_size=None
    )
    return RecordingClient(ws)


async def _refusal(rig: Rig, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(rig.relay.ws_url.replace("ws://", "http://"), headers=_upgrade_headers(headers)) as r,
    ):
        return r.status, await r.json()


def _upgrade_headers(extra: dict[str, str]) -> dict[str, str]:
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        **extra,
    }


async def _ask_for_a_long_answer(rig: Rig, client: RecordingClient) -> None:
    await rig.sim.script(replies=[LONG_ANSWER])
    await client.send(text_item("tell me a long story"))
    await client.send({"type": "response.create"})


async def _metric_reaches(rig: Rig, name: str, value: float, labels: dict[str, str] | None = None) -> None:
    async with asyncio.timeout(10):
        while rig.relay.metric(name, labels) < value:  # noqa: ASYNC110 (a metric has nothing to wait on)
            await asyncio.sleep(0.02)


def _processed(events: list[Event], upto: int) -> tuple[list[Event], str]:
    """What an app processed before its network went: events up to index ``upto`` (the frames
    after it were in flight and are to be re-sent)."""
    shown = [e for e in events[: upto + 1] if e["type"] != "relay.session_resumable"]
    return shown, str(shown[-1]["event_id"])


@pytest.mark.parametrize("in_flight", [0, 3], ids=["all-processed", "three-in-flight"])
async def test_a_cut_mid_answer_resumes_with_every_event_once_in_order(rig: Rig, in_flight: int) -> None:
    client = await rig.client()
    token = _token(client)
    await _ask_for_a_long_answer(rig, client)
    await client.wait_for("response.output_audio.delta")
    await client.cut()
    await _metric_reaches(rig, "relay_client_detached_total", 1)
    await asyncio.sleep(0.5)  # the answer goes on streaming, into the resume log
    first, last_id = _processed(client.events, len(client.events) - 1 - in_flight)

    back = await _resume(rig, token, last_id)
    done = await back.wait_for("response.done")
    events = first + [e for e in back.events if e["type"] != "relay.session_resumable"]
    assert_one_stream(events)
    heard = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert heard == LONG_ANSWER == done["response"]["output"][0]["content"][0]["transcript"]
    assert "session.created" not in back.types()
    assert rig.relay.metric("relay_resumes_total", {"result": "ok"}) == 1

    # The conversation goes on, with the same upstream session and a new token.
    new_token = _token(back)
    assert new_token != token
    start = len(back.events)
    await back.send(text_item("and then?"))
    await back.send({"type": "response.create"})
    second = await back.wait_for("response.done", after=start)
    assert second["response"]["status"] == "completed"
    session = await rig.sim.open_session(back.relay_session)
    assert len(session["conversation"]) == 4  # two questions, two answers: nothing repeated
    await back.close()


async def test_the_old_token_and_other_identities_are_refused_at_the_upgrade(rig: Rig) -> None:
    client = await rig.client()
    token = _token(client)
    await client.cut()
    last = client.events[-1]["event_id"]

    status, body = await _refusal(
        rig, {"Authorization": f"Bearer {OTHER_TOKEN}", "X-Relay-Resume-Token": token}
    )
    assert (status, body["error"]["code"]) == (403, "resume_identity_mismatch")
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    status, body = await _refusal(rig, {"Authorization": f"Bearer {TOKEN}", "X-Relay-Resume-Token": wrong})
    assert (status, body["error"]["code"]) == (401, "invalid_resume_token")
    status, body = await _refusal(rig, {"Authorization": f"Bearer {TOKEN}", "X-Relay-Resume-Token": "x.y"})
    assert (status, body["error"]["code"]) == (401, "invalid_resume_token")
    # Refusals cost the conversation nothing: its owner still resumes it, once.
    back = await _resume(rig, token, last)
    await back.send(text_item("still there?"))
    await back.send({"type": "response.create"})
    await back.wait_for("response.done")
    status, body = await _refusal(rig, {"Authorization": f"Bearer {TOKEN}", "X-Relay-Resume-Token": token})
    assert (status, body["error"]["code"]) == (401, "invalid_resume_token")  # replaced at the resume
    await back.close()


async def test_a_resume_without_credentials_is_a_401_not_a_session(rig: Rig) -> None:
    client = await rig.client()
    token = _token(client)
    await client.cut()
    status, body = await _refusal(rig, {"X-Relay-Resume-Token": token})
    assert status == 401
    assert token not in str(body)


@pytest.mark.parametrize("rig", [{"resume_grace_s": 0.5}], indirect=True)
async def test_the_grace_period_ends_a_conversation_nobody_resumes(rig: Rig) -> None:
    client = await rig.client()
    token = _token(client)
    await client.cut()
    await rig.sim.open_session(client.relay_session)
    await _metric_reaches(rig, "relay_resumes_total", 1, {"result": "grace_expired"})
    async with asyncio.timeout(5):
        while rig.relay.metric("relay_detached_sessions") > 0:  # noqa: ASYNC110 (a metric)
            await asyncio.sleep(0.02)
    status, body = await _refusal(rig, {"Authorization": f"Bearer {TOKEN}", "X-Relay-Resume-Token": token})
    assert (status, body["error"]["code"]) == (410, "session_gone")
    async with asyncio.timeout(5):
        while [s for s in await rig.sim.sessions(client.relay_session) if s["open"]]:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the upstream session is closed, not leaked


async def _detached_gauge_reaches(rig: Rig, value: float) -> None:
    async with asyncio.timeout(10):
        while rig.relay.metric("relay_detached_sessions") != value:  # noqa: ASYNC110 (a metric)
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("rig", [{"resume_grace_s": 3.0}], indirect=True)
async def test_the_detached_gauge_follows_each_conversation_out_and_back(rig: Rig) -> None:
    clients = [await rig.client() for _ in range(3)]
    tokens = [_token(client) for client in clients]
    for count, client in enumerate(clients, start=1):
        await client.cut()
        await _detached_gauge_reaches(rig, count)
    back = await _resume(rig, tokens[0], None)
    await back.wait_for("relay.session_resumable")
    await _detached_gauge_reaches(rig, 2)
    await back.close()  # ended on purpose: it was attached, so the gauge does not move
    await _metric_reaches(rig, "relay_sessions_total", 1, {"outcome": "client_closed"})
    assert rig.relay.metric("relay_detached_sessions") == 2
    await _metric_reaches(rig, "relay_resumes_total", 2, {"result": "grace_expired"})
    await _detached_gauge_reaches(rig, 0)


async def test_a_normal_close_ends_the_conversation(rig: Rig) -> None:
    client = await rig.client()
    token = _token(client)
    await client.close()  # 1000: the app is done
    async with asyncio.timeout(5):
        while rig.relay.metric("relay_sessions_active") > 0:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    status, _ = await _refusal(rig, {"Authorization": f"Bearer {TOKEN}", "X-Relay-Resume-Token": token})
    assert status == 410
    assert rig.relay.metric("relay_client_detached_total") == 0


@pytest.mark.parametrize("rig", [{"resume_buffer_events": 20}], indirect=True)
async def test_a_full_resume_buffer_ends_the_conversation_and_is_counted(rig: Rig) -> None:
    client = await rig.client()
    token = _token(client)
    await _ask_for_a_long_answer(rig, client)
    await client.wait_for("response.created")
    await client.cut()
    await _metric_reaches(rig, "relay_resumes_total", 1, {"result": "buffer_full"})
    status, _ = await _refusal(rig, {"Authorization": f"Bearer {TOKEN}", "X-Relay-Resume-Token": token})
    assert status == 410


async def test_events_sent_again_after_a_resume_are_not_forwarded_twice(rig: Rig) -> None:
    client = await rig.client()
    token = _token(client)
    await client.send({**text_item("remember the number 7", "item_resent_1"), "event_id": "evt_c1"})
    await client.wait_for("conversation.item.added")
    await client.cut()
    back = await _resume(rig, token, client.events[-1]["event_id"])
    # Unsure whether they arrived, the app sends both again: the item (by id) and the event (by id).
    await back.send({**text_item("remember the number 7", "item_resent_1"), "event_id": "evt_c2"})
    await back.send({**text_item("remember the number 7"), "event_id": "evt_c1"})
    await back.send(text_item("what number?"))
    await back.send({"type": "response.create"})
    await back.wait_for("response.done")
    session = await rig.sim.open_session(back.relay_session)
    texts = [i["content"][0].get("text") for i in session["conversation"] if i["role"] == "user"]
    assert texts == ["remember the number 7", "what number?"]
    assert rig.relay.metric("relay_client_events_deduplicated_total") == 2
    assert not [e for e in back.events if e["type"] == "error"]
    await back.close()


async def test_a_resume_while_the_old_socket_still_looks_open_takes_over(rig: Rig) -> None:
    """A phone on a new network reconnects before the relay has seen its old connection die."""
    client = await rig.client()
    token = _token(client)
    last = client.events[-1]["event_id"]
    back = await _resume(rig, token, last)  # the old one never closed
    await back.send(text_item("hello from the new network"))
    await back.send({"type": "response.create"})
    await back.wait_for("response.done")
    await client._reader  # the old connection was closed by the relay
    assert rig.relay.metric("relay_sessions_active") == 1
    await back.close()


async def test_the_openai_sdk_reconnects_into_the_same_conversation(rig: Rig) -> None:
    """The SDK reconnects by itself on 1006 and asks ``on_reconnecting`` how: with the resume
    token from the opt-in event and the last event it processed, it gets the same session."""
    from openai import AsyncOpenAI
    from openai.types import ReconnectingEvent, ReconnectingOverrides

    resume: dict[str, str] = {}

    def on_reconnecting(event: ReconnectingEvent) -> ReconnectingOverrides:
        if not resume or event.attempt > 2:  # gone for good (410): start a new conversation
            return {"extra_headers": {}}
        headers = {"X-Relay-Resume-Token": resume["token"], "X-Relay-Last-Event-Id": resume["last"]}
        return {"extra_headers": headers}

    sdk = AsyncOpenAI(api_key=TOKEN, websocket_base_url=rig.relay.ws_url.removesuffix("/realtime"))
    await rig.sim.script(replies=[LONG_ANSWER])
    types: list[str] = []
    transcript = ""
    async with sdk.realtime.connect(
        model="gpt-realtime", extra_query={"relay_resume": "1"}, on_reconnecting=on_reconnecting
    ) as conn:
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi!"}]}
        )
        await conn.response.create()
        async for event in conn:
            types.append(event.type)
            if event.type == "relay.session_resumable":  # type: ignore[comparison-overlap]
                resume["token"] = getattr(event, "resume_token")  # noqa: B009
                continue
            resume["last"] = event.event_id
            if event.type == "response.output_audio_transcript.delta":
                transcript += event.delta
                if "cut" not in types:  # the network goes mid-answer
                    types.append("cut")
                    conn._connection.transport.abort()  # type: ignore[attr-defined]
            if event.type == "response.done":
                break
    assert "cut" in types
    assert types.count("session.created") == 1
    assert transcript == LONG_ANSWER
    assert rig.relay.metric("relay_resumes_total", {"result": "ok"}) == 1


async def test_an_app_that_sends_every_event_under_one_id_loses_none(rig: Rig) -> None:
    """Event ids are the app's to choose and the API does not deduplicate them; some apps send
    every event under one fixed id. Without a resume nothing is a re-send: every turn answered."""
    client = await rig.client()
    for question in ("first question", "second question", "third question"):
        start = len(client.events)
        await client.send({**text_item(question), "event_id": "evt"})
        await client.send({"type": "response.create", "event_id": "evt"})
        done = await client.wait_for("response.done", after=start)
        assert done["response"]["status"] == "completed"
    session = await rig.sim.open_session(client.relay_session)
    texts = [i["content"][0].get("text") for i in session["conversation"] if i["role"] == "user"]
    assert texts == ["first question", "second question", "third question"]
    assert rig.relay.metric("relay_client_events_deduplicated_total") == 0
    await client.close()
