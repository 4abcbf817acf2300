"""The relay's own answers about items a replacement upstream holds otherwise (sans-I/O)."""

from __future__ import annotations

from typing import Any

from relay.core.protocol import Interface
from relay.core.replay import plan_replay
from relay.core.replayed import answer_locally, held_at_or_before, placed_create
from relay.core.session import SessionState
from relay.core.validation import Validator

GA = Validator(Interface.GA)
WORDS = " ".join(f"w{i}" for i in range(20))


def _conversation() -> SessionState:
    """user_0, answer_1 (spoken, 2 s), user_2, answer_3 (spoken), a replay of the last three."""
    state = SessionState()
    for i in range(4):
        if i % 2:
            content = [{"type": "output_audio", "transcript": WORDS}]
            item: dict[str, Any] = {
                "id": f"item_{i}",
                "type": "message",
                "role": "assistant",
                "content": content,
            }
        else:
            content = [{"type": "input_text", "text": f"question {i}"}]
            item = {"id": f"item_{i}", "type": "message", "role": "user", "content": content}
        state.on_server_event({"type": "conversation.item.added", "item": item})
        if i % 2:  # the length the relay measured from the answer's audio deltas
            state.find(item["id"])["_audio_ms"] = 2000  # type: ignore[index]
    plan = plan_replay(state, max_items=3)
    state.mark_replayed(set(plan.item_ids))
    return state


def _truncate(item_id: str, end_ms: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "event_id": "cut",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": end_ms,
    }


def test_what_the_upstream_holds_as_shown_goes_to_it() -> None:
    state = _conversation()
    assert (state.left_out_ids, state.replayed_ids) == ({"item_0"}, {"item_1", "item_2", "item_3"})
    # A replayed item can be deleted and retrieved upstream (the retrieval is shown from the mirror
    # on its way back); a user message cannot be truncated anywhere: the upstream says so.
    for event in (
        {"type": "conversation.item.delete", "item_id": "item_3"},
        {"type": "conversation.item.retrieve", "item_id": "item_3"},
        _truncate("item_2", 100),
        _truncate("item_unknown", 100),
        {"type": "response.create"},
    ):
        assert answer_locally(state, event, "transcript") is None


def test_a_replayed_answer_is_truncated_by_the_relay_and_replaced_as_heard() -> None:
    state = _conversation()
    local = answer_locally(state, _truncate("item_3", 500), "transcript")
    assert local is not None
    assert {k: v for k, v in local.answer.items() if k != "event_id"} == {
        "type": "conversation.item.truncated",
        "item_id": "item_3",
        "content_index": 0,
        "audio_end_ms": 500,
    }
    delete, create = local.upstream
    assert delete == {"type": "conversation.item.delete", "item_id": "item_3"}
    assert create["previous_item_id"] == "item_2"  # in place
    assert create["item"]["content"] == [{"type": "output_text", "text": " ".join(WORDS.split()[:5])}]
    GA.check(create)
    # The first replayed item goes first: what precedes it in the mirror the upstream never had.
    first = answer_locally(state, _truncate("item_1", 2000), "transcript")
    assert first is not None
    assert first.upstream[1]["previous_item_id"] == "root"
    assert first.upstream[1]["item"]["content"][0]["text"] == WORDS  # all of it was heard


def test_past_the_answers_length_the_apis_own_refusal() -> None:
    local = answer_locally(_conversation(), _truncate("item_3", 2500), "transcript")
    assert local is not None
    assert not local.upstream
    assert local.answer["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "Audio content of 2000ms is already shorter than 2500ms",
        "param": "audio_end_ms",
        "event_id": "cut",
    }


def test_an_item_left_out_is_answered_from_the_mirror() -> None:
    state = _conversation()
    retrieved = answer_locally(
        state, {"type": "conversation.item.retrieve", "item_id": "item_0"}, "transcript"
    )
    assert retrieved is not None
    assert retrieved.answer["item"] == {
        "id": "item_0",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "question 0"}],
    }
    deleted = answer_locally(state, {"type": "conversation.item.delete", "item_id": "item_0"}, "transcript")
    assert deleted is not None
    assert (deleted.answer["type"], deleted.answer["item_id"], deleted.upstream) == (
        "conversation.item.deleted",
        "item_0",
        [],
    )
    state.on_server_event(deleted.answer)  # taken in as the upstream's answer
    assert state.find("item_0") is None
    assert "item_0" not in state.left_out_ids


def test_a_retrieved_replay_never_overwrites_the_mirror() -> None:
    state = _conversation()
    replay_form = {
        "id": "item_3",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "x"}],
    }
    state.on_server_event({"type": "conversation.item.retrieved", "item": replay_form})
    assert state.shown_item("item_3") == {
        "id": "item_3",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": WORDS}],
    }
    state.on_server_event({"type": "conversation.item.truncated", "item_id": "item_3", "audio_end_ms": 0})
    assert state.shown_item("item_3")["content"][0]["transcript"] == ""  # type: ignore[index]


def test_a_new_item_after_one_left_out_goes_after_what_the_upstream_holds_in_its_place() -> None:
    state = SessionState()
    for i in range(5):
        item = {"id": f"item_{i}", "type": "message", "role": "user", "content": []}
        state.on_server_event({"type": "conversation.item.added", "item": item})
    state.mark_replayed({"item_1", "item_3", "item_4"})  # a budget that also skipped item_2
    assert state.left_out_ids == {"item_0", "item_2"}
    assert [held_at_or_before(state, i) for i in ("item_0", "item_1", "item_2", "item_4")] == [
        "root",
        "item_1",
        "item_1",
        "item_4",
    ]
    note = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "n"}]}
    create = {"type": "conversation.item.create", "previous_item_id": "item_2", "item": dict(note)}
    upstream = placed_create(state, create)
    assert upstream is not None
    assert upstream["previous_item_id"] == "item_1"
    assert create["previous_item_id"] == "item_2"  # the app's own event keeps the place it named
    assert upstream["item"]["id"] == create["item"]["id"]  # given one, to know its echo by
    assert str(create["item"]["id"]).startswith("item_")
    for untouched in (
        {**create, "previous_item_id": "item_3"},  # held: the upstream takes it as it is
        {**create, "previous_item_id": "root"},
        {"type": "conversation.item.create", "item": dict(note)},  # at the end
        {**create, "type": "conversation.item.retrieve"},  # not a create
    ):
        assert placed_create(state, untouched) is None
