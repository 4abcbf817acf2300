"""Upstream drops and rotations, end to end against the simulator with fault injection (F3).

Each test checks what an app would notice: the connection stays open, every response.created
gets exactly one response.done, no event arrives twice, no replay echo shows, the session id
never changes, and the new upstream holds the same config and conversation as the old one.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory, RelayHandle
from tests.support.conversation import RecordingClient, text_item
from tests.support.scripted_upstream import ScriptedConnection, ScriptedUpstream
from tests.support.sim_control import SimControl


@dataclass
class Rig:
    relay: RelayHandle
    sim: SimControl

    async def client(self) -> RecordingClient:
        client = await RecordingClient.connect(self.relay.ws_url, self.relay.token)
        await client.wait_for("session.created")
        return client


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# The live API's timing (sessions announced ~0.3 s after the upgrade, answers a round trip
# late): an instant upstream would hide what a replacement costs the app.
REALISTIC = SimulatorConfig(speed=50.0, timing=Timing.realistic())


async def replaced(relay: RelayHandle, times: int, timeout: float = 10) -> None:
    """Wait until the relay has switched to a new upstream ``times`` times in all."""

    def total() -> float:
        metric = relay.registry.get_sample_value
        causes = ("rotation", "1000", "1001", "1006", "1011", "error")
        return sum(metric("relay_upstream_replacements_total", {"cause": c}) or 0 for c in causes)

    async with asyncio.timeout(timeout):
        while total() < times:  # noqa: ASYNC110 (a metric has nothing to wait on)
            await asyncio.sleep(0.02)


@pytest.fixture
async def rig(request: pytest.FixtureRequest, start_relay: RelayFactory) -> AsyncIterator[Rig]:
    runner, port = await start_simulator(REALISTIC)
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        reconnect_base_delay_s=0.05,
        reconnect_max_delay_s=0.5,
        rotate_after_s=0,
        **getattr(request, "param", {}),  # a test's own settings: parametrize("rig", ..., indirect)
    )
    yield Rig(relay, SimControl(f"http://127.0.0.1:{port}"))
    await runner.cleanup()


def _config(session: dict[str, Any]) -> dict[str, Any]:
    """The effective config without the fields every session has its own value for."""
    return {k: v for k, v in session["config"].items() if k not in ("id", "expires_at")}


def _conversation_shape(session: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """Ids, order and kinds of the items, the way replay must preserve them."""
    return [(i["id"], i["type"], i.get("role")) for i in session["conversation"]]


def _texts(session: dict[str, Any]) -> list[str]:
    texts = []
    for item in session["conversation"]:
        for part in item.get("content") or []:
            texts.append(part.get("text") or part.get("transcript") or "")
    return texts


async def _turn(client: RecordingClient, text: str) -> dict[str, Any]:
    start = len(client.events)
    await client.send(text_item(text))
    await client.send({"type": "response.create"})
    return await client.wait_for("response.done", after=start)


FAULTS = [
    pytest.param({"kind": "drop"}, id="1006-abrupt-drop"),
    pytest.param({"kind": "close", "code": 1000}, id="1000"),
    pytest.param({"kind": "close", "code": 1001, "reason": "session_expired"}, id="1001-expired"),
    pytest.param({"kind": "close", "code": 1011}, id="1011"),
]


@pytest.mark.parametrize("fault", FAULTS)
async def test_idle_drop_is_invisible(rig: Rig, fault: dict[str, Any]) -> None:
    client = await rig.client()
    await client.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "Be brief.",
                "output_modalities": ["text"],
            },
        }
    )
    await client.wait_for("session.updated")
    await _turn(client, "first question")
    before = await rig.sim.open_session(client.relay_session)
    await rig.sim.fault(before["id"], **fault)
    await replaced(rig.relay, 1)
    after = await rig.sim.open_session(client.relay_session)
    assert after["id"] != before["id"]
    assert _config(after) == _config(before)
    assert _conversation_shape(after) == _conversation_shape(before)
    done = await _turn(client, "second question")
    assert done["response"]["status"] == "completed"
    client.assert_invariants()
    assert rig.relay.metric("relay_upstream_replacements_total") >= 0
    await client.close()


async def test_drop_mid_audio_response_closes_it_once(rig: Rig) -> None:
    client = await rig.client()
    await rig.sim.script(replies=["This is a long spoken answer " * 8])
    sim_session = await rig.sim.open_session(client.relay_session)
    await rig.sim.fault(sim_session["id"], kind="drop", after_event="response.output_audio.delta", count=3)
    start = len(client.events)
    await client.send(text_item("talk to me"))
    await client.send({"type": "response.create"})
    done = await client.wait_for("response.done", after=start)
    assert done["response"]["status"] in ("incomplete", "failed")
    # Part of it was heard: the app decides what comes next, the relay asks for nothing.
    await replaced(rig.relay, 1)
    await asyncio.sleep(1.0)
    assert "response.created" not in client.types()[client.events.index(done) :]
    # The conversation carries on, with the partial answer kept as what the user heard.
    second = await _turn(client, "and now?")
    assert second["response"]["status"] == "completed"
    client.assert_invariants()
    await client.close()


async def test_events_sent_during_the_outage_arrive_in_order(rig: Rig) -> None:
    client = await rig.client()
    sim_session = await rig.sim.open_session(client.relay_session)
    await rig.sim.global_fault(refuse="503", seconds=0.6)
    await rig.sim.fault(sim_session["id"], kind="drop")
    texts = [f"during outage {i}" for i in range(5)]
    for text in texts:
        await client.send(text_item(text))
    await replaced(rig.relay, 1)
    await client.wait_for("conversation.item.done", lambda e: e["item"]["content"][0]["text"] == texts[-1])
    new = await rig.sim.open_session(client.relay_session)
    assert new["id"] != sim_session["id"]
    assert _texts(new)[-5:] == texts
    client.assert_invariants()
    await client.close()


async def test_proactive_rotation_keeps_everything(start_relay: RelayFactory) -> None:
    runner, port = await start_simulator(REALISTIC)
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        rotate_after_s=1.0,
        rotate_jitter_s=0.0,
    )
    sim = SimControl(f"http://127.0.0.1:{port}")
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    await client.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "Rotate me.",
                "output_modalities": ["text"],
            },
        }
    )
    await client.wait_for("session.updated")
    for i in range(4):
        await _turn(client, f"turn {i}")
        await asyncio.sleep(0.7)
    sessions = await sim.sessions(client.relay_session)
    assert len(sessions) >= 3, "expected several rotations"
    current = await sim.open_session(client.relay_session)
    first = await sim.session(sessions[0]["id"])
    assert _config(current) == _config(first)
    assert [t for t in _texts(current) if t.startswith("turn")] == [f"turn {i}" for i in range(4)]
    assert relay.metric("relay_upstream_replacements_total", {"cause": "rotation"}) >= 2
    client.assert_invariants()
    await client.close()
    await runner.cleanup()


async def test_drop_while_a_session_update_is_in_flight(rig: Rig) -> None:
    client = await rig.client()
    upstream = await rig.sim.open_session(client.relay_session)
    await rig.sim.fault(upstream["id"], kind="stall", seconds=5)  # the old upstream stops reading
    await client.send(
        {"type": "session.update", "session": {"type": "realtime", "instructions": "in flight"}}
    )
    await asyncio.sleep(0.2)  # the update is on its way to a stalled upstream
    await rig.sim.fault(upstream["id"], kind="drop")
    updated = await client.wait_for("session.updated")
    assert updated["session"]["instructions"] == "in flight"
    new = await rig.sim.open_session(client.relay_session)
    assert new["id"] != upstream["id"]
    assert new["config"]["instructions"] == "in flight"
    client.assert_invariants()
    await client.close()


async def test_drop_during_a_replay_restarts_it(rig: Rig) -> None:
    client = await rig.client()
    await _turn(client, "before the drops")
    first = await rig.sim.open_session(client.relay_session)
    # The next new upstream dies while acknowledging the replay; the one after must succeed.
    await rig.sim.global_fault(
        next_sessions=1, fault={"kind": "drop", "after_event": "conversation.item.added"}
    )
    await rig.sim.fault(first["id"], kind="drop")
    done = await _turn(client, "after the drops")
    assert done["response"]["status"] == "completed"
    sessions = await rig.sim.sessions(client.relay_session)
    assert len(sessions) >= 3  # the original, the one dropped mid-replay, the survivor
    final = await rig.sim.open_session(client.relay_session)
    assert [t for t in _texts(final) if t in ("before the drops", "after the drops")] == [
        "before the drops",
        "after the drops",
    ]
    client.assert_invariants()
    await client.close()


async def test_drop_during_a_proactive_rotation(start_relay: RelayFactory) -> None:
    runner, port = await start_simulator(REALISTIC)
    relay = await start_relay(
        upstream="simulator",
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        rotate_after_s=1.0,
        rotate_jitter_s=0.0,
        reconnect_base_delay_s=0.05,
    )
    sim = SimControl(f"http://127.0.0.1:{port}")
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    await _turn(client, "first")
    # The rotation's new upstream dies mid-replay: the old one keeps serving, a later rotation wins.
    await sim.global_fault(next_sessions=1, fault={"kind": "drop", "after_event": "session.updated"})
    await asyncio.sleep(2.5)
    done = await _turn(client, "second")
    assert done["response"]["status"] == "completed"
    final = await sim.open_session(client.relay_session)
    assert [t for t in _texts(final) if t in ("first", "second")] == ["first", "second"]
    assert relay.metric("relay_upstream_replacements_total", {"cause": "rotation"}) >= 1
    client.assert_invariants()
    await client.close()
    await runner.cleanup()


async def test_drop_mid_append_stream_keeps_the_uncommitted_audio(rig: Rig) -> None:
    client = await rig.client()
    await client.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    await client.wait_for("session.updated")
    chunk = base64.b64encode(bytes(960 * 2)).decode()  # 20 ms of PCM16
    for _ in range(4):  # 80 ms before the drop ...
        await client.send({"type": "input_audio_buffer.append", "audio": chunk})
    await asyncio.sleep(0.2)
    upstream = await rig.sim.open_session(client.relay_session)
    await rig.sim.fault(upstream["id"], kind="drop")
    for _ in range(2):  # ... and 40 ms after: only together are they over the 100 ms minimum
        await client.send({"type": "input_audio_buffer.append", "audio": chunk})
    await client.send({"type": "input_audio_buffer.commit"})
    committed = await client.wait_for("input_audio_buffer.committed")
    assert committed["item_id"]
    assert "error" not in client.types()
    client.assert_invariants()
    await client.close()


async def test_drop_after_commit_before_the_response(rig: Rig) -> None:
    client = await rig.client()
    await client.send(text_item("question before the drop"))
    await client.wait_for("conversation.item.done")
    upstream = await rig.sim.open_session(client.relay_session)
    await rig.sim.fault(upstream["id"], kind="drop")
    start = len(client.events)
    await client.send({"type": "response.create"})
    done = await client.wait_for("response.done", after=start)
    assert done["response"]["status"] == "completed"
    final = await rig.sim.open_session(client.relay_session)
    assert "question before the drop" in _texts(final)
    client.assert_invariants()
    await client.close()


async def _long_answer(rig: Rig, client: RecordingClient) -> tuple[dict[str, Any], list[str], float]:
    """A spoken answer of 40 known words: its item, its words, its audio's length in ms."""
    words = [f"word{i}" for i in range(40)]
    await rig.sim.script(replies=[" ".join(words)])
    done = await _turn(client, "tell me something long")
    item = done["response"]["output"][0]
    audio_ms = sum(
        len(base64.b64decode(e["delta"])) / 48
        for e in client.events
        if e["type"] == "response.output_audio.delta" and e["item_id"] == item["id"]
    )
    return item, words, audio_ms


async def test_a_truncated_answer_is_replayed_as_far_as_it_was_heard(rig: Rig) -> None:
    """The app stops playback half-way and truncates; after a drop the new upstream must not
    believe the assistant said the half the user never heard (the API forgets it on truncate)."""
    client = await rig.client()
    item, words, audio_ms = await _long_answer(rig, client)
    start = len(client.events)
    heard_ms = int(audio_ms / 4)
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item["id"],
            "content_index": 0,
            "audio_end_ms": heard_ms,
        }
    )
    await client.wait_for("conversation.item.truncated", after=start)
    before = await rig.sim.open_session(client.relay_session)
    await rig.sim.fault(before["id"], kind="drop")
    after = await rig.sim.replacement(client.relay_session, before["id"], item["id"])
    replayed = next(i for i in after["conversation"] if i["id"] == item["id"])
    text = replayed["content"][0].get("text") or replayed["content"][0].get("transcript")
    assert text == " ".join(words[: round(len(words) * heard_ms / audio_ms)])
    assert 8 <= len(text.split()) <= 12  # about a quarter of the answer, not all of it
    second = await _turn(client, "go on")
    assert second["response"]["status"] == "completed"
    client.assert_invariants()
    await client.close()


@pytest.mark.parametrize("when", ["after-recovery", "during-recovery"])
async def test_an_answer_heard_before_a_drop_can_be_retrieved_and_truncated_after_it(
    rig: Rig, when: str
) -> None:
    """The app plays answers slower than the API sends them: the user may interrupt an answer
    (the app truncates it) or the app may retrieve it after a replacement. The new upstream has
    the answer only as the replay's text, which the API can neither truncate nor show as audio;
    the app must see what the API would have said, and the model remember only what was heard."""
    client = await rig.client()
    await _turn(client, "before the answer")
    item, words, audio_ms = await _long_answer(rig, client)
    before = await rig.sim.open_session(client.relay_session)
    shape = _conversation_shape(before)
    await rig.sim.fault(before["id"], kind="drop")
    start = len(client.events)
    heard_ms = int(audio_ms / 4)
    truncate = {"type": "conversation.item.truncate", "item_id": item["id"], "content_index": 0}
    if when == "during-recovery":  # held until the replacement is ready, then answered
        await client.send({**truncate, "audio_end_ms": heard_ms, "event_id": "cut"})
        truncated = await client.wait_for("conversation.item.truncated", after=start)
    after = await rig.sim.replacement(client.relay_session, before["id"], item["id"])
    if when == "after-recovery":
        await client.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
        retrieved = (await client.wait_for("conversation.item.retrieved", after=start))["item"]
        assert retrieved["content"][0]["type"] == "output_audio"  # as shown, not the replay's text
        assert retrieved["content"][0]["transcript"] == " ".join(words)
        start = len(client.events)
        await client.send({**truncate, "audio_end_ms": heard_ms, "event_id": "cut"})
        truncated = await client.wait_for("conversation.item.truncated", after=start)
    assert (truncated["item_id"], truncated["content_index"], truncated["audio_end_ms"]) == (
        item["id"],
        0,
        heard_ms,
    )
    assert "error" not in client.types()[start:]
    # The model now remembers only what was heard, in the same place in the conversation.
    async with asyncio.timeout(5):
        while True:
            now = await rig.sim.session(after["id"])
            cut = next((i for i in now["conversation"] if i["id"] == item["id"]), None)
            if cut is not None and len(cut["content"][0]["text"].split()) < len(words):
                break
            await asyncio.sleep(0.05)
    assert cut["content"][0]["text"] == " ".join(words[: round(len(words) * heard_ms / audio_ms)])
    assert _conversation_shape(now) == shape
    start = len(client.events)
    await client.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
    retrieved = (await client.wait_for("conversation.item.retrieved", after=start))["item"]
    assert retrieved["content"][0] == {"type": "output_audio", "transcript": ""}  # gone, as on truncate
    # Beyond the answer's length: the API's own refusal.
    start = len(client.events)
    await client.send({**truncate, "audio_end_ms": int(audio_ms) + 1000, "event_id": "too_far"})
    error = (await client.wait_for("error", after=start))["error"]
    assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "audio_end_ms", "too_far")
    assert error["message"].startswith("Audio content of ")
    second = await _turn(client, "go on")
    assert second["response"]["status"] == "completed"
    client.assert_invariants()
    await client.close()


@pytest.mark.parametrize("rig", [{"replay_max_items": 3}], indirect=True)
async def test_items_the_replay_left_out_are_still_the_apps_to_retrieve_truncate_and_delete(rig: Rig) -> None:
    """A long conversation outgrows the replay's budget: the replacement upstream gets only the
    newest items. The app still knows the older ones and acts on them (apps prune old items to
    save tokens): the relay answers for them as the API would, from its mirror, not with the new
    upstream's "not found"."""
    client = await rig.client()
    first = await _turn(client, "the oldest question")
    await _turn(client, "a second question")
    last = await _turn(client, "a third question")
    old_answer = first["response"]["output"][0]["id"]
    question = next(e["item"] for e in client.events if e["type"] == "conversation.item.added")
    before = await rig.sim.open_session(client.relay_session)
    await rig.sim.fault(before["id"], kind="drop")
    after = await rig.sim.replacement(
        client.relay_session, before["id"], str(last["response"]["output"][0]["id"])
    )
    assert old_answer not in [i["id"] for i in after["conversation"]]  # left out by the budget
    start = len(client.events)
    await client.send({"type": "conversation.item.retrieve", "item_id": question["id"], "event_id": "get"})
    retrieved = (await client.wait_for("conversation.item.retrieved", after=start))["item"]
    assert (retrieved["id"], retrieved["content"]) == (question["id"], question["content"])
    truncate = {"type": "conversation.item.truncate", "item_id": old_answer, "content_index": 0}
    await client.send({**truncate, "audio_end_ms": 100})
    truncated = await client.wait_for("conversation.item.truncated", after=start)
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (old_answer, 100)
    for item_id in (question["id"], old_answer):
        sent_at = len(client.events)
        await client.send({"type": "conversation.item.delete", "item_id": item_id})
        deleted = await client.wait_for("conversation.item.deleted", after=sent_at)
        assert deleted["item_id"] == item_id
    assert "error" not in client.types()[start:]
    assert _conversation_shape(await rig.sim.session(after["id"])) == _conversation_shape(after)
    done = await _turn(client, "go on")
    assert done["response"]["status"] == "completed"
    client.assert_invariants()
    await client.close()


@pytest.mark.parametrize("rig", [{"replay_max_items": 3}], indirect=True)
async def test_a_new_item_placed_after_one_the_replay_left_out_goes_in_where_the_app_put_it(rig: Rig) -> None:
    """Apps insert context mid-conversation (``previous_item_id``). After a replacement whose
    replay left the named item out, the new upstream would refuse the create as unknown: the
    relay places the item after the one the upstream holds there (first, here, as the oldest
    items are what a replay leaves out) and the echoes name the item the app named."""
    client = await rig.client()
    first = await _turn(client, "the oldest question")
    await _turn(client, "a second question")
    last = await _turn(client, "a third question")
    question = next(e["item"] for e in client.events if e["type"] == "conversation.item.added")
    old_answer = first["response"]["output"][0]["id"]
    before = await rig.sim.open_session(client.relay_session)
    await rig.sim.fault(before["id"], kind="drop")
    after = await rig.sim.replacement(
        client.relay_session, before["id"], str(last["response"]["output"][0]["id"])
    )
    held = [i["id"] for i in after["conversation"]]
    assert old_answer not in held
    assert question["id"] not in held
    start = len(client.events)
    note = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a correction"}]}
    create = {"type": "conversation.item.create", "previous_item_id": old_answer}
    await client.send({**create, "item": {**note, "id": "item_note"}, "event_id": "with_id"})
    await client.send({**create, "previous_item_id": question["id"], "item": note, "event_id": "no_id"})
    named = await client.wait_for(
        "conversation.item.added", lambda e: e["item"]["id"] == "item_note", after=start
    )
    assert named["previous_item_id"] == old_answer
    unnamed = await client.wait_for(
        "conversation.item.added", lambda e: e["item"]["id"] != "item_note", after=start
    )
    assert unnamed["previous_item_id"] == question["id"]
    dones = [
        await client.wait_for("conversation.item.done", lambda e, i=i: e["item"]["id"] == i, after=start)
        for i in ("item_note", unnamed["item"]["id"])
    ]
    assert [d["previous_item_id"] for d in dones] == [old_answer, question["id"]]
    assert "error" not in client.types()[start:]
    # On the upstream both went first, newest first, ahead of everything the replay gave it.
    now = _conversation_shape(await rig.sim.session(after["id"]))
    assert [i[0] for i in now[:2]] == [unnamed["item"]["id"], "item_note"]
    assert now[2:] == _conversation_shape(after)
    done = await _turn(client, "go on")
    assert done["response"]["status"] == "completed"
    client.assert_invariants()
    await client.close()


@pytest.mark.parametrize(
    ("cut_after", "tools"),
    [
        pytest.param("response.created", [], id="before-any-output"),
        pytest.param("response.function_call_arguments.delta", [WEATHER_TOOL], id="mid-tool-call"),
    ],
)
async def test_an_answer_cut_before_the_app_had_anything_of_it_is_asked_for_again(
    rig: Rig, cut_after: str, tools: list[dict[str, Any]]
) -> None:
    """The model's first output takes hundreds of milliseconds, and a tool call's arguments
    stream before the app may run it: a drop then leaves the user with nothing to hear and an
    app with nothing to act on. The relay closes the cut response for the app and asks the new
    upstream again, with the app's parameters, and the conversation goes on without the empty
    start."""
    client = await rig.client()
    await client.send({"type": "session.update", "session": {"type": "realtime", "tools": tools}})
    await client.wait_for("session.updated")
    before = await rig.sim.open_session(client.relay_session)
    await rig.sim.fault(before["id"], kind="drop", after_event=cut_after, count=1)
    start = len(client.events)
    await client.send(text_item("what is the weather in Paris?"))
    await client.send({"type": "response.create", "response": {"metadata": {"turn": "7"}}})
    first = await client.wait_for("response.done", after=start)
    assert first["response"]["status"] == "incomplete"
    assert first["response"]["status_details"]["error"]["code"] == "upstream_replaced"
    second = await client.wait_for("response.done", after=client.events.index(first) + 1)
    assert second["response"]["status"] == "completed"
    assert second["response"]["metadata"] == {"turn": "7"}  # asked for as the app asked
    answer = second["response"]["output"][0]
    if tools:
        assert (answer["type"], json.loads(answer["arguments"])) == ("function_call", {"city": "Paris"})
    else:
        assert answer["content"][0]["transcript"]
    after = await rig.sim.open_session(client.relay_session)
    assert after["id"] != before["id"]
    kinds = [(i["type"], i.get("role")) for i in after["conversation"]]
    assert kinds == [("message", "user"), (answer["type"], answer.get("role"))]  # no empty start
    client.assert_invariants()
    await client.close()


async def test_a_response_the_old_upstream_starts_during_a_rotation_is_not_cut_off(
    start_relay: RelayFactory,
) -> None:
    """A rotation replays onto the new upstream while the old one still serves. If the old one
    starts something meanwhile (a server-VAD turn's response, say), switching would orphan it:
    the client would see response.created and never its response.done. The relay must keep the
    old upstream until the response is over, and switch then."""
    old_moved_on = asyncio.Event()

    async def respond(conn: ScriptedConnection, data: bytes) -> None:
        if b'"session.update"' not in data:
            return
        if len(upstream.connections) == 2 and not old_moved_on.is_set():
            # The replay reached the new upstream: the old one starts a response right now.
            await upstream.connections[0].send(RESPONSE_CREATED)
            old_moved_on.set()
            await asyncio.sleep(0.2)  # the new upstream answers only after the old moved on
        await conn.send({"type": "session.updated", "event_id": "event_u", "session": SESSION})

    upstream = await ScriptedUpstream(respond).start()
    relay = await start_relay(
        upstream="simulator", upstream_url=upstream.url, rotate_after_s=1.0, rotate_jitter_s=0.0
    )
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    await asyncio.wait_for(old_moved_on.wait(), 10)
    created = await client.wait_for("response.created", timeout=10)
    await asyncio.sleep(0.5)  # the abandoned rotation is over
    await upstream.connections[0].send(RESPONSE_DONE)  # the old upstream finishes its response
    done = await client.wait_for("response.done", timeout=10)
    assert done["response"]["id"] == created["response"]["id"] == "resp_old"
    assert done["response"]["status"] == "completed"  # delivered by the old upstream, not cut off
    async with asyncio.timeout(5):
        while relay.metric("relay_upstream_replacements_total", {"cause": "rotation"}) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    client.assert_invariants()
    await client.close()
    await upstream.close()


SESSION = {"type": "realtime", "object": "realtime.session", "id": "sess_SCRIPTED000000000000001"}
RESPONSE_CREATED = {
    "type": "response.created",
    "event_id": "event_rc",
    "response": {
        "object": "realtime.response",
        "id": "resp_old",
        "status": "in_progress",
        "output": [],
        "conversation_id": "conv_1",
        "output_modalities": ["text"],
    },
}
RESPONSE_DONE = {
    "type": "response.done",
    "event_id": "event_rd",
    "response": {**RESPONSE_CREATED["response"], "status": "completed"},  # type: ignore[dict-item]
}
