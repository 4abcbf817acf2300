"""The snapshot another process takes a conversation over from (relay.core.snapshot)."""

from __future__ import annotations

import orjson
import pytest

from relay.core.replay import plan_replay
from relay.core.session import SessionState
from relay.core.snapshot import Snapshot, SnapshotInvalid, capture, restore, unfinished_response


def _state() -> SessionState:
    state = SessionState()
    session = {"id": "sess_1", "type": "realtime", "instructions": "be brief"}
    state.on_server_event({"type": "session.created", "session": session})
    for item_id, role, part in (
        ("item_1", "user", {"type": "input_text", "text": "hello"}),
        ("item_2", "assistant", {"type": "output_audio", "transcript": "hi there"}),
    ):
        item = {"id": item_id, "type": "message", "role": role, "content": [part]}
        state.on_server_event({"type": "conversation.item.added", "item": item})
    return state


def test_a_restored_state_replays_exactly_what_the_original_would() -> None:
    original = _state()
    config, items = capture(original, max_items=500, max_tokens=24_000, user_audio="transcript")
    snapshot = Snapshot("relay_1", "token:abc", b"\x01" * 32, "gpt-realtime", config=config, items=items)
    decoded = Snapshot.decode(snapshot.encode())
    assert decoded.config == snapshot.config
    assert decoded.items == [create["item"] for create in plan_replay(original).creates.values()]
    restored = SessionState()
    restore(restored, decoded)
    assert plan_replay(restored).events == plan_replay(original).events
    assert decoded.ask_again is None
    snapshot.ask_again = {"instructions": "in French"}  # a response cut before the app had any
    assert Snapshot.decode(snapshot.encode()).ask_again == {"instructions": "in French"}


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[]", orjson.dumps({"v": 99}), orjson.dumps({"v": 1, "config": {}, "items": []})],
    ids=["garbage", "not-an-object", "other-version", "missing-fields"],
)
def test_anything_but_a_snapshot_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(SnapshotInvalid):
        Snapshot.decode(data)


def _frame(event: dict[str, object]) -> bytes:
    return orjson.dumps(event)


def test_an_answer_cut_by_a_crash_ends_once_with_what_was_said() -> None:
    snapshot = Snapshot("relay_1", "token:abc", b"", None)
    response = {"id": "resp_1", "status": "in_progress"}
    created = {"type": "response.created", "event_id": "e1", "response": response}
    item = {"id": "item_9", "type": "message", "role": "assistant", "content": []}
    added = {"type": "response.output_item.added", "event_id": "e2", "response_id": "resp_1", "item": item}
    frames = [
        _frame(created),
        _frame(added),
        _frame({"type": "response.output_audio_transcript.delta", "event_id": "e3", "item_id": "item_9",
                "delta": "half of it"}),
        _frame({"type": "response.output_audio.delta", "event_id": "e4", "delta": "AAAA"}),
    ]  # fmt: skip
    done = unfinished_response(frames, snapshot)
    assert done is not None
    assert done["response"]["id"] == "resp_1"
    assert done["response"]["status"] == "incomplete"
    assert done["response"]["output"][0]["content"][0]["transcript"] == "half of it"
    finished = [*frames, _frame({"type": "response.done", "event_id": "e5", "response": {"id": "resp_1"}})]
    assert unfinished_response(finished, snapshot) is None


def test_an_answer_the_log_never_saw_end_is_ended_from_the_snapshot() -> None:
    """An attached client's events are not logged: the snapshot knows a response was streaming."""
    snapshot = Snapshot("relay_1", "token:abc", b"", None, active_response={"id": "resp_2"})
    done = unfinished_response([], snapshot)
    assert done is not None
    assert done["response"]["id"] == "resp_2"
    logged_done = _frame({"type": "response.done", "event_id": "e9", "response": {"id": "resp_2"}})
    assert unfinished_response([logged_done], snapshot) is None
