"""Client events sent upstream and not yet answered, in order, with their place in the audio.

The API answers each client event it accepts (appends excepted) with an event of its own, or
rejects it with an ``error``, in the order it received them. Until that answer arrives the event
is in flight: an upstream lost now may or may not have applied it. A replacement upstream gets it
again, at the same place in the input audio stream (a commit cuts the buffer exactly where it was
sent), and while anything is in flight the supervisor does not switch upstreams proactively.
``response.create`` and ``response.cancel`` are tracked by the response state instead: a lost
response is closed for the client or asked for again, never blindly repeated.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]

# The server event that answers each tracked client event.
ANSWERS = {
    "session.update": "session.updated",
    "conversation.item.create": "conversation.item.added",
    "conversation.item.delete": "conversation.item.deleted",
    "conversation.item.truncate": "conversation.item.truncated",
    "conversation.item.retrieve": "conversation.item.retrieved",
    "input_audio_buffer.commit": "input_audio_buffer.committed",
    "input_audio_buffer.clear": "input_audio_buffer.cleared",
}
_ANSWERED_BY = {answer: kind for kind, answer in ANSWERS.items()}
_ANSWERED_BY["conversation.item.created"] = "conversation.item.create"  # beta-shaped upstreams
_ITEM_ID_EVENTS = ("conversation.item.delete", "conversation.item.truncate", "conversation.item.retrieve")


@dataclass(slots=True)
class Pending:
    event: Event
    position: int  # bytes of the input audio stream sent before it


class InFlight:
    def __init__(self) -> None:
        self.pending: deque[Pending] = deque()

    def __bool__(self) -> bool:
        return bool(self.pending)

    def sent(self, event: Event, position: int) -> None:
        if event.get("type") in ANSWERS:
            self.pending.append(Pending(event, position))

    def answered(self, event: Event) -> Pending | None:
        """The in-flight event a server event answers (removed), if any."""
        kind = _ANSWERED_BY.get(str(event.get("type")))
        if kind is None:
            return None
        if kind == "conversation.item.create":
            return self._take(kind, matches=_creates(event.get("item")))
        return self._take(kind)

    def rejected(self, error: dict[str, Any]) -> Pending | None:
        """The in-flight event an ``error`` rejects (removed), if it can be told."""
        event_id = error.get("event_id")
        if isinstance(event_id, str):
            for entry in self.pending:
                if entry.event.get("event_id") == event_id:
                    self.pending.remove(entry)
                    return entry
        kinds = _rejected_kinds(str(error.get("param") or ""), error.get("code"))
        return self._take(*kinds) if kinds else None

    def _take(self, *kinds: str, matches: Any = None) -> Pending | None:
        for entry in self.pending:
            if entry.event.get("type") in kinds and (matches is None or matches(entry.event)):
                self.pending.remove(entry)
                return entry
        return None

    def of_type(self, kind: str) -> list[Event]:
        return [entry.event for entry in self.pending if entry.event.get("type") == kind]

    def rebase(self, positions: list[int]) -> None:
        """The entries' places in a replacement upstream's stream (one per entry, in order)."""
        for entry, position in zip(self.pending, positions, strict=True):
            entry.position = position


def _creates(item: Any) -> Any:
    """Matches the create an ``item.added`` answers: the same id, or (ids left to the server)
    the first create of the same type and role."""
    if not isinstance(item, dict):
        return None

    def matches(event: Event) -> bool:
        wanted = event.get("item") or {}
        if wanted.get("id"):
            return bool(wanted["id"] == item.get("id"))
        return _kind(wanted) == _kind(item)

    return matches


def _kind(item: dict[str, Any]) -> tuple[Any, ...]:
    content = item.get("content")
    first = (
        content[0].get("type")
        if isinstance(content, list) and content and isinstance(content[0], dict)
        else None
    )
    return item.get("type"), item.get("role"), first


def _rejected_kinds(param: str, code: Any) -> tuple[str, ...]:
    if param.startswith("session") or code in ("cannot_update_voice", "cannot_update_model"):
        return ("session.update",)
    if (param.startswith("item") and param != "item_id") or param == "previous_item_id":
        return ("conversation.item.create",)
    if param in ("item_id", "content_index", "audio_end_ms") or code == "item_not_found":
        return _ITEM_ID_EVENTS
    if code == "input_audio_buffer_commit_empty":
        return ("input_audio_buffer.commit",)
    return ()
