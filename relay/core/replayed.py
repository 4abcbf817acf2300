"""Client events about items a replacement upstream holds otherwise than the app saw them.

A replacement upstream has the conversation as the relay replayed it: an assistant's spoken
answer as text (the API takes no assistant audio), and the oldest items, past the replay's
budget, not at all. Apps keep acting on the items they were shown, and apps play answers slower
than the API sends them, so after a rotation or a drop:
- a truncation of a replayed answer (the user interrupted it) would be refused (the API
  truncates only audio);
- a retrieval, deletion or truncation of an item left out would be refused as unknown, and so
  would a new item placed after one (``previous_item_id``).

The relay answers these itself, as the API would have, from its mirror of the conversation;
for a truncated replayed answer it also gives the upstream the answer again as far as it was
heard (deleted and re-created in place under its id, as the rotation delta does), so the model
does not believe it said what the user never heard. A retrieved replayed item is shown from the
mirror on its way back (``SessionState.shown_item``). A new item placed after one left out goes
after the item the upstream holds in that place, and its echo shows the app the place it asked
for. Pure: the supervisor does the sending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relay.core.errors import error_event, new_id
from relay.core.replay import replayable
from relay.core.session import SessionState

Event = dict[str, Any]

ITEM_EVENTS = frozenset(
    {"conversation.item.delete", "conversation.item.retrieve", "conversation.item.truncate"}
)


@dataclass(slots=True)
class LocalAnswer:
    answer: Event  # what the API would have answered, taken in as if the upstream had sent it
    upstream: list[Event] = field(default_factory=list)  # the relay's own, to bring it in line


def answer_locally(state: SessionState, event: Event, user_audio: str) -> LocalAnswer | None:
    """The relay's answer to ``event``, or None when the upstream is to answer it."""
    kind, item_id = event.get("type"), event.get("item_id")
    if kind not in ITEM_EVENTS or not isinstance(item_id, str):
        return None
    left_out = item_id in state.left_out_ids
    if not left_out and (kind != "conversation.item.truncate" or item_id not in state.replayed_ids):
        return None
    if kind == "conversation.item.delete":
        return LocalAnswer({"type": "conversation.item.deleted", "event_id": _id(), "item_id": item_id})
    if kind == "conversation.item.retrieve":
        shown = state.shown_item(item_id)
        return LocalAnswer({"type": "conversation.item.retrieved", "event_id": _id(), "item": shown})
    return _truncation(state, event, item_id, user_audio, replayed=not left_out)


def _id() -> str:
    return new_id("event_")


def _truncation(
    state: SessionState, event: Event, item_id: str, user_audio: str, *, replayed: bool
) -> LocalAnswer | None:
    item = state.find(item_id)
    content = item.get("content") if item is not None else None
    index, end_ms = event.get("content_index"), event.get("audio_end_ms")
    if (
        item is None
        or item.get("role") != "assistant"
        or not isinstance(content, list)
        or not isinstance(index, int)
        or not 0 <= index < len(content)
        or not isinstance(content[index], dict)
        or content[index].get("type") != "output_audio"
        or not isinstance(end_ms, int)
    ):
        return None  # not an answer with audio: the upstream refuses it in its own words
    length = item.get("_audio_ms")
    if isinstance(length, int | float) and end_ms > length:
        client_id = event.get("event_id")
        return LocalAnswer(
            error_event(
                "invalid_value",
                f"Audio content of {int(length)}ms is already shorter than {end_ms}ms",
                param="audio_end_ms",
                client_event_id=client_id if isinstance(client_id, str) else None,
            )
        )
    truncated = {
        "type": "conversation.item.truncated",
        "event_id": _id(),
        "item_id": item_id,
        "content_index": index,
        "audio_end_ms": end_ms,
    }
    if not replayed:
        return LocalAnswer(truncated)
    heard = replayable({**item, "_truncated_ms": end_ms}, user_audio)
    create = {"type": "conversation.item.create", "previous_item_id": _previous(state, item), "item": heard}
    return LocalAnswer(truncated, [{"type": "conversation.item.delete", "item_id": item_id}, create])


def _previous(state: SessionState, item: dict[str, Any]) -> str:
    """Where the item sits on the upstream: after the item before it, or first of the replay
    (what comes before it in the mirror is then what the replay's budget left out)."""
    position = state.index_of(str(item["id"])) or 0
    return held_at_or_before(state, str(state.items[position - 1].get("id"))) if position else "root"


def held_at_or_before(state: SessionState, item_id: str) -> str:
    """The item the upstream holds that stands in for ``item_id`` as a place in the
    conversation: itself, or the nearest one before it in the mirror, or ``root`` (the replay's
    budget leaves out the oldest items, so one left out has none held before it)."""
    if item_id not in state.left_out_ids:
        return item_id
    position = state.index_of(item_id)
    for item in reversed(state.items[: position or 0]):
        earlier = item.get("id")
        if isinstance(earlier, str) and earlier not in state.left_out_ids:
            return earlier
    return "root"


def placed_create(state: SessionState, event: Event) -> Event | None:
    """A ``conversation.item.create`` to go after an item the replay left out, in the form the
    current upstream takes (it would refuse that item as unknown): after the item it holds in
    that place. None: the event (of any type) goes as it is. An item without an id is given one, so that its
    echo can be told (the API would have drawn one)."""
    previous, item = event.get("previous_item_id"), event.get("item")
    if (
        event.get("type") != "conversation.item.create"
        or not isinstance(previous, str)
        or previous not in state.left_out_ids
        or not isinstance(item, dict)
    ):
        return None
    if not isinstance(item.get("id"), str):
        item["id"] = new_id("item_")
    return {**event, "previous_item_id": held_at_or_before(state, previous)}
