"""Session state and replay planning, without sockets, on the real recorded sessions."""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest

from relay.core.backoff import classify_close, delays
from relay.core.protocol import Interface
from relay.core.replay import EchoFilter, plan_delta, plan_replay, plan_tail
from relay.core.retention import VAD_MARGIN_MS
from relay.core.session import SessionState, interrupt_response, interrupted_response_done
from relay.core.snapshot import capture
from relay.core.validation import Validator
from tests.support.conversation import assert_sdk_parses
from tests.support.recordings import load, recording_files

GA = Validator(Interface.GA)


def _feed(path: Any) -> tuple[SessionState, list[dict[str, Any]]]:
    state = SessionState()
    received = []
    for frame in load(path):
        if frame["direction"] == "sent" and frame["data"]["type"] == "input_audio_buffer.append":
            state.append_audio(base64.b64decode(frame["data"]["audio"]))
        elif frame["direction"] == "sent":
            state.on_client_event(copy.deepcopy(frame["data"]))
        else:
            state.on_server_event(copy.deepcopy(frame["data"]))
            received.append(frame["data"])
    return state, received


@pytest.mark.parametrize("path", recording_files(), ids=lambda p: p.stem)
def test_mirror_follows_a_recorded_session(path: Any) -> None:
    state, received = _feed(path)
    added = [e["item"]["id"] for e in received if e["type"] == "conversation.item.added"]
    assert [i["id"] for i in state.items] == list(dict.fromkeys(added))
    last_config = [e["session"] for e in received if e["type"] in ("session.created", "session.updated")][-1]
    assert state.config == {k: v for k, v in last_config.items() if k not in ("id", "object", "expires_at")}
    assert state.is_quiet()
    assert not state.in_flight  # every client event was answered
    for item in state.items:  # content as it was when done (transcripts, function arguments)
        done = [
            e["item"]
            for e in received
            if e["type"] == "conversation.item.done" and e["item"]["id"] == item["id"]
        ]
        if done and done[-1].get("type") == "function_call":
            assert item["arguments"] == done[-1]["arguments"]


@pytest.mark.parametrize("path", recording_files(), ids=lambda p: p.stem)
def test_replay_plan_is_valid_and_rebuilds_the_conversation(path: Any) -> None:
    state, _ = _feed(path)
    plan = plan_replay(state)
    assert plan.events[0]["type"] == "session.update"
    assert plan.events[0]["session"]["type"] == "realtime"
    for event in plan.events:
        GA.check(event)  # everything replayed is something the API accepts
    # Apply the plan to a fresh mirror the way the API echoes item creates.
    fresh = SessionState()
    previous = None
    for event in plan.events[1:]:
        item = event["item"]
        fresh.on_server_event({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        previous = item["id"]
    assert [i["id"] for i in fresh.items] == [i["id"] for i in state.items]
    assert [i.get("call_id") for i in fresh.items] == [i.get("call_id") for i in state.items]
    echo = EchoFilter(plan.events, relay_ids="relay_")
    assert echo.suppress({"type": "session.updated", "session": {}})
    for item_id in plan.item_ids:
        assert echo.suppress({"type": "conversation.item.added", "item": {"id": item_id}})
        assert echo.suppress({"type": "conversation.item.done", "item": {"id": item_id}})
    assert echo.done
    assert not echo.suppress({"type": "rate_limits.updated"})


def _items(count: int) -> SessionState:
    state = SessionState()
    for i in range(count):
        kind = ["message", "function_call", "function_call_output"][i % 3]
        item: dict[str, Any] = {"id": f"item_{i}", "type": kind}
        if kind == "message":
            item.update(role="assistant", content=[{"type": "output_audio", "transcript": "words " * 20}])
        elif kind == "function_call":
            item.update(call_id=f"call_{i}", name="f", arguments="{}")
        else:
            item.update(call_id=f"call_{i - 1}", output="ok")
        state.on_server_event({"type": "conversation.item.added", "item": item})
    return state


def test_budget_trims_oldest_first_and_never_orphans_an_output() -> None:
    state = _items(10)
    plan = plan_replay(state, max_items=5, max_tokens=10**6)
    kept = [e["item"]["id"] for e in plan.events[1:]]
    assert kept == ["item_6", "item_7", "item_8", "item_9"]  # item_5 (an output) lost its call
    assert (plan.replayed, plan.trimmed) == (4, 6)
    assert plan.events[1].get("previous_item_id") is None
    assert plan.events[2]["previous_item_id"] == "item_6"
    assistant = next(e["item"] for e in plan.events[1:] if e["item"]["type"] == "message")
    assert assistant["content"] == [{"type": "output_text", "text": "words " * 20}]


def test_interrupted_response_gets_one_terminal_done() -> None:
    state = SessionState()
    state.on_client_event({"type": "response.create"})
    assert state.response_active
    assert not state.is_quiet()
    state.on_server_event(
        {
            "type": "response.created",
            "response": {
                "id": "resp_1",
                "conversation_id": "conv_1",
                "output_modalities": ["audio"],
                "status": "in_progress",
            },
        }
    )
    item = {"id": "item_a", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    state.on_server_event({"type": "response.output_item.added", "response_id": "resp_1", "item": item})
    state.on_server_event({"type": "conversation.item.added", "item": item})
    for word in ("Hello", " there"):
        state.on_server_event(
            {"type": "response.output_audio_transcript.delta", "item_id": "item_a", "delta": word}
        )
    done = interrupted_response_done(state, "upstream_replaced")
    assert done is not None
    assert done["response"]["status"] == "incomplete"
    assert done["response"]["status_details"] == {
        "type": "incomplete",
        "error": {"type": "server_error", "code": "upstream_replaced"},
    }
    assert_sdk_parses([done])  # its reasons are a closed set
    assert done["response"]["output"][0]["content"] == [{"type": "output_audio", "transcript": "Hello there"}]
    assert state.find("item_a")["content"][0]["transcript"] == "Hello there"  # type: ignore[index]
    assert interrupted_response_done(state, "upstream_replaced") is None  # exactly one
    assert state.is_quiet()


def _streaming(params: dict[str, Any] | None = None) -> SessionState:
    """A response asked for (with ``params``), created, its first item added: nothing heard yet."""
    state = SessionState()
    state.on_client_event({"type": "response.create", **({"response": params} if params else {})})
    response = {
        "id": "resp_1",
        "conversation_id": "conv_1",
        "output_modalities": ["audio"],
        "status": "in_progress",
    }
    state.on_server_event({"type": "response.created", "response": response})
    item = {"id": "item_a", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    state.on_server_event({"type": "response.output_item.added", "response_id": "resp_1", "item": item})
    state.on_server_event({"type": "conversation.item.added", "item": item})
    return state


def test_a_replacement_asks_again_only_for_what_the_app_never_had() -> None:
    """Asked and not started, or started with nothing heard: ended for the app and asked again
    (with the app's own parameters); heard in part: ended, and the conversation keeps what was
    said; a call's: nothing (its session lives on at the API)."""
    asked = SessionState()
    asked.on_client_event({"type": "response.create", "response": {"instructions": "be brief"}})
    cut = interrupt_response(asked, "upstream_replaced", own_session=True, ask_again=True)
    assert (cut.done, cut.again) == (None, {"instructions": "be brief"})
    assert not asked.response_requested

    unheard = _streaming({"instructions": "in French"})
    cut = interrupt_response(unheard, "upstream_replaced", own_session=True, ask_again=True)
    assert cut.done is not None
    assert cut.done["response"]["status"] == "incomplete"
    assert cut.again == {"instructions": "in French"}
    assert unheard.find("item_a") is None  # the answer will be given again, not kept half-begun

    heard = _streaming()
    heard.on_server_event(
        {"type": "response.output_audio_transcript.delta", "item_id": "item_a", "delta": "Bon"}
    )
    cut = interrupt_response(heard, "upstream_replaced", own_session=True, ask_again=True)
    assert cut.done is not None
    assert cut.again is None
    assert heard.find("item_a") is not None

    default = _streaming()
    assert interrupt_response(default, "upstream_replaced", own_session=True, ask_again=True).again == {}
    off = _streaming()
    cut = interrupt_response(off, "upstream_replaced", own_session=True, ask_again=False)
    assert cut.done is not None
    assert cut.again is None
    call = _streaming()
    cut = interrupt_response(call, "upstream_replaced", own_session=False, ask_again=True)
    assert (cut.done, cut.again) == (None, None)
    assert call.active_response is not None


def test_unanswered_client_events_are_re_sent_at_their_place_in_the_audio() -> None:
    state = _manual_turns()
    update = {"type": "session.update", "session": {"type": "realtime", "instructions": "x"}}
    create = {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
    }
    state.append_audio(b"\x01\x00" * 10)
    state.on_client_event(update)
    state.append_audio(b"\x02\x00" * 10)
    state.on_client_event(create)
    state.on_client_event({"type": "input_audio_buffer.commit"})
    state.append_audio(b"\x03\x00" * 10)
    assert not state.is_quiet()
    tail = plan_tail(state)
    assert [e["type"] for e in tail.events] == [
        "input_audio_buffer.append",
        "session.update",
        "input_audio_buffer.append",
        "conversation.item.create",
        "input_audio_buffer.commit",
        "input_audio_buffer.append",
    ]
    assert [base64.b64decode(e["audio"]) for e in tail.events if "audio" in e] == [
        b"\x01\x00" * 10,
        b"\x02\x00" * 10,
        b"\x03\x00" * 10,
    ]
    assert tail.positions == [20, 40, 40]
    state.on_server_event({"type": "session.updated", "session": state.config})
    state.on_server_event({"type": "conversation.item.added", "item": {"id": "item_1", **create["item"]}})
    state.on_server_event({"type": "input_audio_buffer.committed", "item_id": "item_2"})
    assert not state.in_flight
    tail = plan_tail(state)  # the commit cut the buffer where it was sent: only what followed
    assert [base64.b64decode(e["audio"]) for e in tail.events] == [b"\x03\x00" * 10]


def _manual_turns() -> SessionState:
    state = SessionState()
    session = {
        "type": "realtime",
        "audio": {"input": {"format": {"type": "audio/pcm"}, "turn_detection": None}},
    }
    state.on_server_event({"type": "session.created", "session": session})
    return state


def _vad(prefix_padding_ms: int = 300) -> SessionState:
    state = SessionState()
    detection = {"type": "server_vad", "prefix_padding_ms": prefix_padding_ms}
    session = {
        "type": "realtime",
        "audio": {"input": {"format": {"type": "audio/pcm"}, "turn_detection": detection}},
    }
    state.on_server_event({"type": "session.created", "session": session})
    return state


def test_an_open_microphone_with_vad_keeps_only_the_padding() -> None:
    """Room noise for minutes, no speech: the relay keeps what the API's VAD keeps as padding."""
    state = _vad(prefix_padding_ms=300)
    for n in range(50 * 60):  # a minute of 20 ms appends, in real time
        state.append_audio(bytes(960), now=n * 0.02)
    assert state.audio.kept_bytes <= (300 + VAD_MARGIN_MS + 20) * 48
    assert len(plan_tail(state).audio) >= (300 + VAD_MARGIN_MS - 20) * 48
    assert state.is_quiet()  # uncommitted padding never blocks a rotation


def test_a_burst_the_server_had_no_time_to_judge_is_kept_whole() -> None:
    """Audio sent faster than real time is judged by the server's VAD on arrival and its events
    take a round trip back: all of what was sent within the margin is replayed, not its tail."""
    state = _vad(prefix_padding_ms=300)
    for n in range(500):
        state.append_audio(bytes(960), now=n * 0.02)  # 10 s in real time
    state.append_audio(b"\x01\x00" * 24000 * 3, now=10.0)  # then 3 s of speech in one append
    assert plan_tail(state).audio.endswith(b"\x01\x00" * 24000 * 3)
    state.append_audio(bytes(960), now=10.5)  # half a second later the server has had its say
    assert len(plan_tail(state).audio) <= (300 + VAD_MARGIN_MS + 20) * 48 + 48000 * 3


def test_an_utterance_is_kept_whole_from_its_onset_minus_the_padding() -> None:
    state = _vad(prefix_padding_ms=200)
    for n in range(100):  # 2 s of silence
        state.append_audio(bytes(960), now=n * 0.02)
    # The server reports an onset 100 ms back (its detection lag, within the relay's margin).
    state.on_server_event(
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1900, "item_id": "i"}
    )
    for n in range(250):  # 5 s of speech
        state.append_audio(b"\x01\x00" * 480, now=2 + n * 0.02)
    assert not state.is_quiet()
    tail = plan_tail(state)
    assert len(tail.audio) == (7000 - 1700) * 48  # from 1900 - 200 ms to the end
    state.on_server_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 7000, "item_id": "i"})
    state.on_server_event({"type": "input_audio_buffer.committed", "item_id": "i"})
    assert state.audio.kept_bytes == 0  # committed: it is an item now


def test_manual_turns_keep_everything_since_the_commit_on_the_sample_grid() -> None:
    state = _manual_turns()
    state.append_audio(b"\x01\x02\x03")  # a split sample, carried into the next append
    state.append_audio(b"\x04\x05\x06")
    assert plan_tail(state).audio == b"\x01\x02\x03\x04\x05\x06"
    state.on_client_event({"type": "input_audio_buffer.commit"})
    state.append_audio(b"\x07\x08")
    state.on_server_event({"type": "input_audio_buffer.committed", "item_id": "i"})
    assert plan_tail(state).audio == b"\x07\x08"


def test_a_format_change_drops_audio_in_the_old_format() -> None:
    state = _manual_turns()
    state.append_audio(b"\x01\x00" * 100)
    session = {
        "type": "realtime",
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}},
    }
    state.on_server_event({"type": "session.updated", "session": session})
    assert plan_tail(state).audio == b""


def test_the_delta_brings_a_prepared_upstream_up_to_date() -> None:
    state = _items(6)
    prepared = plan_replay(state)
    assert plan_delta(prepared, plan_replay(state)) == []
    state.on_server_event({"type": "conversation.item.deleted", "item_id": "item_0"})
    state.on_server_event(
        {
            "type": "conversation.item.added",
            "previous_item_id": None,
            "item": {
                "id": "item_new",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "new"}],
            },
        }
    )
    state.on_server_event({"type": "conversation.item.truncated", "item_id": "item_3", "audio_end_ms": 0})
    delta = plan_delta(prepared, plan_replay(state))
    assert [(e["type"], e.get("item_id") or e["item"]["id"]) for e in delta] == [
        ("conversation.item.delete", "item_0"),
        ("conversation.item.delete", "item_3"),
        ("conversation.item.create", "item_3"),
        ("conversation.item.create", "item_new"),
    ]
    assert delta[2]["previous_item_id"] == "item_2"
    assert delta[3]["previous_item_id"] == "item_5"
    for event in delta:
        GA.check(event)


def test_echoes_and_errors_of_the_relays_own_events_are_recognised() -> None:
    plan = plan_replay(_items(3))
    events = [{**e, "event_id": f"relay_x_{n}"} for n, e in enumerate(plan.events)]
    echo = EchoFilter(events, relay_ids="relay_x_", strict=False)
    assert echo.suppress({"type": "session.updated", "session": {}})
    assert not echo.suppress({"type": "session.updated", "session": {}})  # the client's own
    bad = {"type": "error", "error": {"code": "invalid_value", "event_id": "relay_x_1", "param": "item.id"}}
    assert echo.suppress(bad)
    assert not echo.suppress({"type": "error", "error": {"code": "x", "event_id": "evt_client"}})
    for item_id in plan.item_ids[1:]:
        assert echo.suppress({"type": "conversation.item.added", "item": {"id": item_id}})
        assert echo.suppress({"type": "conversation.item.done", "item": {"id": item_id}})
    assert echo.done  # the refused create's echoes are not waited for


def test_backoff_and_close_classification() -> None:
    import random

    waits = list(delays(0.1, 2.0, 8, random.Random(1)))
    assert len(waits) == 8
    assert all(min(2.0, 0.1 * 2**i) / 2 <= w <= min(2.0, 0.1 * 2**i) for i, w in enumerate(waits))
    assert classify_close(3000, None) == ("error", True)
    assert classify_close(4000, "invalid_model") == ("error", True)
    assert classify_close(1001, "session_expired") == ("1001", False)
    assert classify_close(None, None) == ("1006", False)
    assert classify_close(1011, None) == ("1011", False)


def test_a_server_detected_turn_owes_a_response_until_it_starts() -> None:
    state = SessionState()
    state.on_server_event(
        {
            "type": "session.created",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": True}}},
            },
        }
    )
    state.on_server_event({"type": "input_audio_buffer.committed", "item_id": "item_manual"})
    assert not state.response_requested  # a client's manual commit starts no response by itself
    state.on_server_event({"type": "input_audio_buffer.speech_started", "item_id": "item_1"})
    state.on_server_event({"type": "input_audio_buffer.speech_stopped", "item_id": "item_1"})
    state.on_server_event({"type": "input_audio_buffer.committed", "item_id": "item_1"})
    assert state.response_requested  # owed: a replacement upstream must be asked for it
    state.on_server_event({"type": "response.created", "response": {"id": "r", "conversation_id": "c"}})
    assert not state.response_requested


def _spoken_answer(state: SessionState, transcript: str, audio_ms: int, fmt: str, per_ms: int) -> str:
    """One assistant audio answer in the GA event shapes; deltas are seen by size only."""
    session = {"type": "realtime", "id": "sess_1", "audio": {"output": {"format": {"type": fmt}}}}
    state.on_server_event({"type": "session.created", "session": session})
    response = {"id": "resp_1", "conversation_id": "conv_1", "output_modalities": ["audio"]}
    state.on_server_event({"type": "response.created", "response": response})
    item = {"id": "item_a", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    state.on_server_event(
        {"type": "response.output_item.added", "response_id": "resp_1", "output_index": 0, "item": item}
    )
    state.on_server_event({"type": "conversation.item.added", "previous_item_id": None, "item": item})
    for _ in range(audio_ms // 100):
        state.on_audio_delta(len(base64.b64encode(bytes(per_ms * 100))))
    done = {**item, "status": "completed", "content": [{"type": "output_audio", "transcript": transcript}]}
    state.on_server_event(
        {"type": "response.output_item.done", "response_id": "resp_1", "output_index": 0, "item": done}
    )
    state.on_server_event({"type": "conversation.item.done", "previous_item_id": None, "item": done})
    state.on_server_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    return "item_a"


def _replayed_text(state: SessionState) -> str:
    create = next(e for e in plan_replay(state).events if e["type"] == "conversation.item.create")
    GA.check(create)
    return str(create["item"]["content"][0]["text"])


@pytest.mark.parametrize(("fmt", "per_ms"), [("audio/pcm", 48), ("audio/pcmu", 8), ("audio/pcma", 8)])
def test_a_truncated_answer_replays_only_what_was_heard(fmt: str, per_ms: int) -> None:
    words = " ".join(f"w{i}" for i in range(20))
    state = SessionState()
    item_id = _spoken_answer(state, words, 4000, fmt, per_ms)
    assert _replayed_text(state) == words  # untruncated: all of it
    truncated = {"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0}
    state.on_server_event({**truncated, "audio_end_ms": 1000})
    assert _replayed_text(state) == " ".join(f"w{i}" for i in range(5))  # a quarter of the audio
    state.on_server_event({**truncated, "audio_end_ms": 0})
    assert _replayed_text(state) == ""  # interrupted before a word was played


def test_a_truncation_without_known_audio_length_assumes_a_speaking_rate() -> None:
    state = SessionState()
    item_id = _spoken_answer(state, " ".join(f"w{i}" for i in range(20)), 0, "audio/pcm", 48)
    state.on_server_event(
        {"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0, "audio_end_ms": 2000}
    )
    assert _replayed_text(state) == "w0 w1 w2 w3 w4"  # 2 s at 2.5 words a second


def test_delta_size_is_read_without_parsing() -> None:
    from relay.io.frames import delta_chars

    seen = 0
    for path in recording_files():
        for frame in load(path):
            data = frame["data"]
            if data.get("type") == "response.output_audio.delta":
                assert delta_chars(orjson.dumps(data)) == len(data["delta"])
                seen += 1
    assert seen > 0
    assert delta_chars(b'{"type":"response.output_audio.delta"}') == 0


def test_a_response_without_conversation_id_is_attributed_from_the_apps_requests() -> None:
    """Realtime-compatible servers may omit ``conversation_id``: out-of-band is known from the
    app's own request; a response nothing explains counts as in the conversation."""
    state = SessionState()
    state.on_server_event({"type": "response.created", "response": {"id": "resp_vad"}})
    assert state.active_response is not None  # e.g. started by server VAD: tracked
    state.on_server_event({"type": "response.done", "response": {"id": "resp_vad"}})
    state.on_client_event({"type": "response.create", "response": {"conversation": "none"}})
    state.on_server_event({"type": "response.created", "response": {"id": "resp_oob"}})
    assert state.active_response is None  # the app asked for an out-of-band one
    assert state.is_quiet()
    state.on_client_event({"type": "response.create"})
    state.on_client_event({"type": "response.create", "response": {"conversation": "none"}})
    state.on_server_event({"type": "response.created", "response": {"id": "resp_1"}})
    assert state.active_response is not None
    assert state.active_response["id"] == "resp_1"
    done = interrupted_response_done(state, "upstream_replaced")
    assert done is not None
    assert done["response"]["id"] == "resp_1"
    state.on_server_event({"type": "response.created", "response": {"id": "resp_2", "conversation_id": None}})
    assert state.active_response is None  # the live API's own word wins


def test_the_mirror_keeps_what_a_replay_can_use_and_bounded_audio() -> None:
    """A session of hours must not grow the relay: items beyond the replay budget are never
    replayed, and audio kept in items (replay_user_audio=audio) is bounded; the oldest items
    fall back to their transcripts."""
    from relay.core.session import MAX_ITEM_AUDIO_CHARS

    state = SessionState(max_items=100)
    for n in range(1000):
        item = {
            "id": f"item_{n}",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "t"}],
        }
        state.on_server_event({"type": "conversation.item.added", "item": item})
    assert 100 <= len(state.items) <= 164
    assert state.items[-1]["id"] == "item_999"
    audio = "A" * (1024 * 1024)
    for n in range(20):
        part = {"type": "input_audio", "audio": audio, "transcript": f"said {n}"}
        item = {"id": f"audio_{n}", "type": "message", "role": "user", "content": [part]}
        state.on_server_event({"type": "conversation.item.added", "item": item})
    kept = [i["id"] for i in state.items if "audio" in i["content"][0]]
    assert sum(len(audio) for _ in kept) <= MAX_ITEM_AUDIO_CHARS
    assert kept == [f"audio_{n}" for n in range(12, 20)]  # the newest eight
    replayed = plan_replay(state, user_audio="audio").creates["audio_0"]["item"]["content"][0]
    assert replayed == {"type": "input_text", "text": "said 0"}


def _audio_item(n: int, audio: str) -> dict[str, Any]:
    part = {"type": "input_audio", "audio": audio, "transcript": f"said {n}"}
    return {"id": f"audio_{n}", "type": "message", "role": "user", "content": [part]}


def _audio_held(state: SessionState) -> int:
    return sum(len(part.get("audio", "")) for item in state.items for part in item["content"])


@pytest.mark.parametrize("way", ["restored", "completed", "kept"])
def test_audio_that_reaches_the_mirror_any_way_stays_bounded(way: str) -> None:
    """Items are measured for audio only when what was added could pass the bound; audio that
    came in by a restore, an item's completion or the relay's own kept item counts as well."""
    from relay.core.session import MAX_ITEM_AUDIO_CHARS
    from relay.core.snapshot import Snapshot, keep_partial_output, restore

    audio = "A" * (1024 * 1024)
    state = SessionState()
    if way == "restored":  # a takeover: the conversation's audio arrives all at once
        items = [_audio_item(n, audio) for n in range(8)]
        restore(state, Snapshot("s", "k", b"", None, items=items))
    elif way == "completed":  # items added without audio, their audio shown on completion
        for n in range(8):
            state.on_server_event({"type": "conversation.item.added", "item": _audio_item(n, "")})
            state.on_server_event({"type": "conversation.item.done", "item": _audio_item(n, audio)})
    else:  # what the user heard of cut answers, kept by the relay
        for n in range(8):
            keep_partial_output(state, {"response": {"output": [_audio_item(n, audio)]}})
    assert _audio_held(state) == 8 * len(audio)  # at the bound: nothing dropped yet
    assert [state.find(f"audio_{n}") for n in range(8)] == state.items  # each found by its id
    for n in range(8, 12):
        state.on_server_event({"type": "conversation.item.added", "item": _audio_item(n, audio)})
    assert _audio_held(state) <= MAX_ITEM_AUDIO_CHARS
    kept = [item["id"] for item in state.items if "audio" in item["content"][0]]
    assert kept == [f"audio_{n}" for n in range(4, 12)]  # the newest eight


def test_items_are_found_and_placed_by_id_in_a_long_conversation() -> None:
    """Events name recent items; an item placed after an older one still lands beside it."""
    state = SessionState()
    for n in range(300):
        item = {"id": f"item_{n}", "type": "message", "role": "user", "content": []}
        state.on_server_event({"type": "conversation.item.added", "item": item})
    late = {"id": "late", "type": "message", "role": "user", "content": []}
    state.on_server_event({"type": "conversation.item.added", "item": late, "previous_item_id": "item_10"})
    assert [item["id"] for item in state.items[10:13]] == ["item_10", "late", "item_11"]
    found = state.find("item_10")
    assert found is not None
    assert found["id"] == "item_10"
    assert state.find("item_299") is state.items[-1]
    assert state.find("never") is None
    state.on_server_event({"type": "conversation.item.deleted", "item_id": "item_10"})
    assert state.find("item_10") is None
    small = SessionState(max_items=10)
    for n in range(100):  # dropped from the mirror past its bound: no longer found
        item = {"id": f"item_{n}", "type": "message", "role": "user", "content": []}
        small.on_server_event({"type": "conversation.item.added", "item": item})
    assert small.find("item_0") is None
    assert small.find("item_99") is small.items[-1]
    again = {"id": "item_0", "type": "message", "role": "user", "content": []}
    small.on_server_event({"type": "conversation.item.added", "item": again})
    assert small.items[-1]["id"] == "item_0"  # added again, at the end


def _assistant(item_id: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "content": []}


def _user(item_id: str, transcript: str | None, audio: str | None = None) -> dict[str, Any]:
    part = {"type": "input_audio", "transcript": transcript} | ({"audio": audio} if audio else {})
    return {"id": item_id, "type": "message", "role": "user", "content": [part]}


def _said(item_id: str, text: str) -> dict[str, Any]:
    content = [{"type": "output_audio", "transcript": text}]
    return {"id": item_id, "type": "message", "role": "assistant", "status": "completed", "content": content}


def _answer(response_id: str, item_id: str, text: str, *, truncate_first: bool) -> list[dict[str, Any]]:
    """An answer streamed and completed; truncated after its item is done, or while it streams
    (the user spoke over it: the truncation comes before the item's completion)."""
    truncated = {
        "type": "conversation.item.truncated",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": 20,
    }
    done = [
        {"type": "response.output_item.done", "response_id": response_id, "item": _said(item_id, text)},
        {"type": "conversation.item.done", "item": _said(item_id, text)},
    ]
    return [
        {"type": "response.created", "response": {"id": response_id, "output_modalities": ["audio"]}},
        {"type": "response.output_item.added", "response_id": response_id, "item": _assistant(item_id)},
        {"type": "conversation.item.added", "item": _assistant(item_id)},
        {"type": "response.output_audio.delta", "item_id": item_id, "delta": "AAAA" * 600},
        {"type": "response.output_audio_transcript.delta", "item_id": item_id, "delta": text},
        *([truncated, *done] if truncate_first else [*done, truncated]),
        {"type": "response.done", "response": {"id": response_id, "status": "completed"}},
    ]


_MIB = "A" * 1024 * 1024  # ten of them: the oldest items' audio goes past the mirror's bound
_CHANGES_IN_PLACE: list[dict[str, Any]] = [
    {"type": "conversation.item.added", "item": _user("u1", None)},
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "content_index": 0,
     "transcript": "hello there"},
    {"type": "conversation.item.done", "item": _user("u1", "hello there, again")},
    {"type": "conversation.item.added", "item": _user("u1", "added again")},
    *_answer("r1", "a1", "one two three four", truncate_first=False),
    *_answer("r3", "a3", "five six seven eight", truncate_first=True),
    *({"type": "conversation.item.added", "item": _user(f"big{n}", f"said {n}", _MIB)} for n in range(10)),
    {"type": "conversation.item.deleted", "item_id": "u1"},
]  # fmt: skip


def _agrees(state: SessionState, user_audio: str) -> bool:
    """A snapshot's items, from the forms the state keeps, are the items a plan makes afresh."""
    _, items = capture(state, max_items=500, max_tokens=24_000, user_audio=user_audio)
    made = [create["item"] for create in plan_replay(state, user_audio=user_audio).creates.values()]
    return bool(orjson.loads(orjson.dumps(items)) == made)


@pytest.mark.parametrize("user_audio", ["transcript", "audio"])
def test_a_snapshot_from_kept_replay_forms_holds_the_items_made_afresh(user_audio: str) -> None:
    """Items' replay forms are kept between snapshots (several a turn); after each event of
    every recorded session, and of changes made to items in place (a transcript, an item's
    completion, a truncation, audio trimmed, a deletion, a cut answer's partial output), the
    snapshot's items are those a replay plan makes afresh."""
    for path in recording_files():
        state = SessionState()
        for frame in load(path):
            data = copy.deepcopy(frame["data"])
            if frame["direction"] == "sent" and data["type"] == "input_audio_buffer.append":
                state.append_audio(base64.b64decode(data["audio"]))
            elif frame["direction"] == "sent":
                state.on_client_event(data)
            else:
                state.on_server_event(data)
                assert _agrees(state, user_audio), (path.stem, data["type"])
    state = SessionState()
    for event in _CHANGES_IN_PLACE:
        if event["type"] == "response.output_audio.delta":  # as the conversation counts them
            state.on_audio_delta(len(event["delta"]))
        else:
            state.on_server_event(copy.deepcopy(event))
        assert _agrees(state, user_audio), event["type"]
    created = {"type": "response.created", "response": {"id": "r2", "output_modalities": ["audio"]}}
    for event in (
        created,
        {"type": "response.output_item.added", "response_id": "r2", "item": _assistant("a2")},
        {"type": "conversation.item.added", "item": _assistant("a2")},
        {"type": "response.output_audio_transcript.delta", "item_id": "a2", "delta": "cut short"},
    ):
        state.on_server_event(event)
        assert _agrees(state, user_audio), event["type"]
    assert interrupted_response_done(state, "upstream_replaced") is not None
    assert _agrees(state, user_audio)


def test_a_restored_conversation_is_snapshotted_as_restored() -> None:
    """Items restored under ids the state already knew are new items: nothing kept for the old
    ones is used for them."""
    from relay.core.snapshot import Snapshot, restore

    state = SessionState()
    for n in range(3):
        state.on_server_event({"type": "conversation.item.added", "item": _user(f"u{n}", f"first {n}")})
    assert _agrees(state, "transcript")
    restore(state, Snapshot("s", "k", b"", None, items=[_user(f"u{n}", f"second {n}") for n in range(3)]))
    assert _agrees(state, "transcript")
    _, items = capture(state, max_items=500, max_tokens=24_000, user_audio="transcript")
    assert b"second 2" in orjson.dumps(items)


def test_a_response_is_asked_for_again_with_the_apps_parameters_only_when_they_were_its() -> None:
    state = SessionState()
    params = {"instructions": "One word.", "metadata": {"turn": "1"}}
    state.on_client_event({"type": "response.create", "response": params})
    assert state.requested_params == params
    refused = {"code": "conversation_already_has_active_response", "event_id": None}
    state.on_server_event({"type": "error", "error": refused})
    assert state.requested_params is None  # refused: nothing to ask for again
    state.on_client_event({"type": "response.create", "response": params})
    created = {"id": "resp_1", "conversation_id": "conv_1", "output_modalities": ["audio"]}
    state.on_server_event({"type": "response.created", "response": created})
    assert (state.active_params, state.requested_params) == (params, None)
    assert state.unheard_response()  # nothing of it reached the app yet
    state.on_server_event({"type": "response.output_text.delta", "item_id": "x", "delta": "a"})
    state.on_server_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    state.on_client_event({"type": "response.create"})
    assert state.requested_params is None  # a bare request: the session's defaults
