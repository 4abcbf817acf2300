"""The events that make a fresh upstream identical to the old one, and the echoes they cause.

Order (design.md "Replay, precisely"): the full ``session.update``; one
``conversation.item.create`` per item with its original id, chained by ``previous_item_id``
(:func:`plan_replay`); what changed since, when the replay was prepared while the old upstream
kept serving (:func:`plan_delta`); then the input audio the API still held, with the client
events it had not answered re-sent at their places in it (:func:`plan_tail`; their answers are
the client's to see). Assistant audio becomes ``output_text`` with its transcript (the API cannot
take assistant audio); user audio becomes its transcript or, when retained, the audio itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pybase64

from relay.core.session import SessionState, clone

Event = dict[str, Any]
_ITEM_ECHOES = frozenset({"conversation.item.added", "conversation.item.done", "conversation.item.created"})
_APPEND_CHUNK_BYTES = 768 * 1024  # 1 MiB of base64


@dataclass
class ReplayPlan:
    """A session's configuration and conversation as events for a fresh upstream."""

    update: Event  # the full session.update
    creates: dict[str, Event]  # item id -> its conversation.item.create, in conversation order
    trimmed: int  # oldest items left out by the budget

    @property
    def events(self) -> list[Event]:
        return [self.update, *self.creates.values()]

    @property
    def item_ids(self) -> list[str]:
        return list(self.creates)

    @property
    def replayed(self) -> int:
        return len(self.creates)


def plan_replay(
    state: SessionState,
    *,
    max_items: int = 500,
    max_tokens: int = 24_000,
    user_audio: Literal["transcript", "audio"] | str = "transcript",
) -> ReplayPlan:
    kept = _within_budget(state.items, max_items, max_tokens, _tokens)
    creates: dict[str, Event] = {}
    previous: str | None = None
    for item in kept:
        create: Event = {"type": "conversation.item.create", "item": replayable(item, user_audio)}
        if previous is not None:
            create["previous_item_id"] = previous
        creates[item["id"]] = create
        previous = item["id"]
    update = {"type": "session.update", "session": replay_config(state)}
    return ReplayPlan(update, creates, len(state.items) - len(kept))


def replay_config(state: SessionState) -> dict[str, Any]:
    """The configuration a replay sends (the state's, without the relay's own notes)."""
    config = {k: clone(v) for k, v in state.config.items() if not k.startswith("_")}
    config.setdefault("type", "realtime")
    return config


def encoded_replay_items(
    state: SessionState, *, max_items: int, max_tokens: int, user_audio: str
) -> list[orjson.Fragment]:
    """The items :func:`plan_replay` would create, each as its JSON text, for a snapshot.

    A snapshot is taken several times a turn (with Redis), and making every item's form again
    cost 2.5-4 ms at 500 items. Each item's encoded form and token count are kept in the state
    until the state changes, drops or replaces that item. Kept as bytes: plain objects would
    double what the garbage collector walks in a long conversation (a full collection with 100
    of them: 88 -> 165 ms).
    """
    forms = state.replay_forms

    def form(item: dict[str, Any]) -> tuple[str, bytes, int]:
        key = item.get("id")
        kept = forms.get(key) if isinstance(key, str) else None
        if kept is None or kept[0] != user_audio:
            kept = (user_audio, orjson.dumps(replayable(item, user_audio)), _tokens(item))
            if isinstance(key, str):
                forms[key] = kept
        return kept

    chosen = _within_budget(state.items, max_items, max_tokens, lambda item: form(item)[2])
    return [orjson.Fragment(form(item)[1]) for item in chosen]


def plan_delta(prepared: ReplayPlan, current: ReplayPlan) -> list[Event]:
    """What turns an upstream that received ``prepared`` into one matching ``current``.

    A rotation replays a snapshot while the old upstream keeps serving; the conversation may move
    on meanwhile (a turn, a truncation, a deletion, the budget trimming an old item). The delta is
    small: the configuration if it changed, items gone or changed deleted, items new or changed
    created after their predecessor.
    """
    events: list[Event] = []
    if current.update != prepared.update:
        events.append(clone(current.update))
    kept: set[str] = set()
    for item_id, create in prepared.creates.items():
        now = current.creates.get(item_id)
        if now is not None and now["item"] == create["item"]:
            kept.add(item_id)
        else:
            events.append({"type": "conversation.item.delete", "item_id": item_id})
    previous: str | None = None
    for item_id, create in current.creates.items():
        if item_id not in kept:
            event = {"type": "conversation.item.create", "item": clone(create["item"])}
            event["previous_item_id"] = previous if previous is not None else "root"
            events.append(event)
        previous = item_id
    return events


def plan_transcriptions(state: SessionState) -> tuple[list[Event], list[str]]:
    """A transcription session's utterances committed on the old upstream and not transcribed
    yet: re-sent and re-committed, in order, so the new upstream transcribes them (returns the
    events and the app's item ids they stand for, in commit order). Turn detection is off while
    they go in: the server's VAD would otherwise cut them its own way."""
    pending = [(item_id, audio) for item_id, audio in state.transcribing.items() if audio]
    if not pending:
        return [], []
    detection = (state.config.get("audio") or {}).get("input", {}).get("turn_detection")
    events: list[Event] = []
    if detection is not None:
        events.append(_turn_detection_update(None))
    for _, audio in pending:
        _append(events, [], audio)
        events.append({"type": "input_audio_buffer.commit"})
    if detection is not None:
        events.append(_turn_detection_update(clone(detection)))
    return events, [item_id for item_id, _ in pending]


def _turn_detection_update(detection: Any) -> Event:
    session = {"type": "transcription", "audio": {"input": {"turn_detection": detection}}}
    return {"type": "session.update", "session": session}


@dataclass
class Tail:
    """The input audio the old upstream still held, with the client events it had not answered
    at their places in it: the last part of every replay."""

    events: list[Event]
    audio: bytes  # all of it, in stream order: the replacement upstream's stream starts with it
    positions: list[int]  # where each in-flight event now sits in that stream


def plan_tail(state: SessionState) -> Tail:
    audio = state.audio
    events: list[Event] = []
    sent: list[bytes] = []
    positions: list[int] = []
    position = audio.replay_from()
    size = 0
    for entry in state.in_flight.pending:
        at = max(entry.position, position)
        if entry.event.get("type") == "input_audio_buffer.clear":
            position = at  # the audio before a clear would be cleared at once: not re-sent
        else:
            size += _append(events, sent, audio.segment(position, at))
            position = at
        positions.append(size)
        events.append(clone(entry.event))
    _append(events, sent, audio.segment(position, audio.end))
    return Tail(events, b"".join(sent), positions)


def _append(events: list[Event], sent: list[bytes], segment: bytes) -> int:
    """Re-send ``segment`` as appends of at most 1 MiB of audio each."""
    for start in range(0, len(segment), _APPEND_CHUNK_BYTES):
        chunk = segment[start : start + _APPEND_CHUNK_BYTES]
        events.append({"type": "input_audio_buffer.append", "audio": pybase64.b64encode_as_string(chunk)})
        sent.append(chunk)
    return len(segment)


def replayable(item: dict[str, Any], user_audio: str) -> dict[str, Any]:
    """An item as ``conversation.item.create`` accepts it, keeping its id and call ids."""
    kind = item.get("type")
    base = {"id": item["id"], "type": kind}
    if kind == "message":
        role = item.get("role")
        content = [_content(part, role, user_audio) for part in item.get("content") or []]
        if item.get("_truncated_ms") is not None:
            content = [_heard_only(part, item) for part in content]
        return {**base, "role": role, "content": [c for c in content if c is not None] or [_empty(role)]}
    if kind == "function_call":
        return {
            **base,
            "call_id": item.get("call_id"),
            "name": item.get("name"),
            "arguments": item.get("arguments") or "",
        }
    if kind == "function_call_output":
        return {**base, "call_id": item.get("call_id"), "output": item.get("output") or ""}
    return {k: v for k, v in item.items() if k not in ("status", "object") and not k.startswith("_")}


def _content(part: dict[str, Any], role: Any, user_audio: str) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "output_audio":  # the API cannot take assistant audio: keep what was said
        return {"type": "output_text", "text": part.get("transcript") or ""}
    if kind == "output_text":
        return {"type": "output_text", "text": part.get("text") or ""}
    if kind == "input_audio":
        if (user_audio == "audio" or not part.get("transcript")) and part.get("audio"):
            return {"type": "input_audio", "audio": part["audio"]}
        return {"type": "input_text", "text": part.get("transcript") or ""}
    if kind in ("input_text", "input_image"):
        return {k: v for k, v in part.items() if v is not None}
    return None


_WORDS_PER_SECOND = 2.5  # speech rate assumed when the item's audio length is unknown


def _heard_only(part: dict[str, Any] | None, item: dict[str, Any]) -> dict[str, Any] | None:
    """What the user heard of a truncated assistant message.

    On ``conversation.item.truncate`` the API drops the transcript and keeps the audio up to
    ``audio_end_ms``, so the model remembers only what was played. A replay cannot send assistant
    audio; it sends the transcript cut at the same point (by the share of the item's audio that
    was played), or the model would believe it said what the user never heard.
    """
    if part is None or part.get("type") != "output_text":
        return part
    end_ms = float(item["_truncated_ms"] or 0)
    words = str(part.get("text") or "").split()
    total_ms = item.get("_audio_ms")
    if isinstance(total_ms, (int, float)) and total_ms > 0:
        keep = round(len(words) * min(1.0, end_ms / total_ms))
    else:
        keep = int(end_ms / 1000 * _WORDS_PER_SECOND)
    return {"type": "output_text", "text": " ".join(words[:keep])}


def _empty(role: Any) -> dict[str, Any]:
    return {"type": "output_text" if role == "assistant" else "input_text", "text": ""}


def _tokens(item: dict[str, Any]) -> int:
    """A rough count (4 characters a token) for the replay budget."""
    size = len(str(item.get("arguments") or "")) + len(str(item.get("output") or ""))
    for part in item.get("content") or []:
        size += len(str(part.get("text") or part.get("transcript") or ""))
    return size // 4 + 4


def _within_budget(
    items: list[dict[str, Any]], max_items: int, max_tokens: int, tokens_of: Callable[[dict[str, Any]], int]
) -> list[dict[str, Any]]:
    """The newest items that fit, oldest trimmed first; outputs never outlive their call."""
    kept: list[dict[str, Any]] = []
    tokens = 0
    for item in reversed(items):
        cost = tokens_of(item)
        if len(kept) >= max_items or tokens + cost > max_tokens:
            break
        kept.append(item)
        tokens += cost
    kept.reverse()
    calls = {i.get("call_id") for i in kept if i.get("type") == "function_call"}
    return [i for i in kept if i.get("type") != "function_call_output" or i.get("call_id") in calls]


class EchoFilter:
    """Recognises the new upstream's answers to what the relay itself sent, which the client must
    not see: the ``session.updated`` of a replayed configuration, the echoes of replayed items
    and deletions, and the errors of events carrying the relay's own event ids. ``strict`` (while
    a replay is being prepared) also takes any other error as the replay's failure."""

    def __init__(self, events: list[Event], *, relay_ids: str, strict: bool = True) -> None:
        self.relay_ids = relay_ids  # the prefix of the event ids the relay gives its own events
        self.strict = strict
        self.updates = 0
        self.items: set[str] = set()  # created: echoed by item.added, then item.done
        self.deletions: set[str] = set()
        self.commits = 0  # re-committed utterances: each answered by input_audio_buffer.committed
        self.committed: list[str] = []  # the item ids the new upstream gave them, in order
        self.causes: dict[str, tuple[str, str]] = {}  # relay event id -> what it waits for
        self.errors: list[str] = []
        self.expect(events)

    def expect(self, events: list[Event]) -> None:
        """Also recognise the answers to ``events`` (sent after the ones already expected)."""
        for event in events:
            self._expect(event)

    def _expect(self, event: Event) -> None:
        kind, event_id = event.get("type"), str(event.get("event_id"))
        if kind == "session.update":
            self.updates += 1
            self.causes[event_id] = ("update", "")
        elif kind == "conversation.item.create":
            self.items.add(event["item"]["id"])
            self.causes[event_id] = ("item", event["item"]["id"])
        elif kind == "conversation.item.delete":
            self.deletions.add(event["item_id"])
            self.causes[event_id] = ("delete", event["item_id"])
        elif kind == "input_audio_buffer.commit":
            self.commits += 1
            self.causes[event_id] = ("commit", "")

    @property
    def done(self) -> bool:
        return not (self.updates or self.items or self.deletions or self.commits)

    def suppress(self, event: Event) -> bool:
        kind = event.get("type")
        if kind == "session.updated" and self.updates:
            self.updates -= 1
            return True
        if kind in _ITEM_ECHOES:
            item_id = (event.get("item") or {}).get("id")
            if item_id in self.items:
                if kind != "conversation.item.added":
                    self.items.discard(item_id)
                return True
        elif kind == "conversation.item.deleted" and event.get("item_id") in self.deletions:
            self.deletions.discard(event["item_id"])
            return True
        elif kind == "input_audio_buffer.committed" and self.commits:
            self.commits -= 1
            self.committed.append(str(event.get("item_id")))
            return True
        elif kind == "error":
            return self._error(event.get("error") or {})
        return False

    def _error(self, error: dict[str, Any]) -> bool:
        event_id = error.get("event_id")
        ours = isinstance(event_id, str) and event_id.startswith(self.relay_ids)
        if not (ours or self.strict):
            return False  # the client's own: its to see
        self.errors.append(f"{error.get('code')}: {error.get('message')}")
        cause = self.causes.pop(str(event_id), None)
        if cause is not None:  # no echo will follow for what was refused
            kind, item_id = cause
            if kind == "update":
                self.updates -= 1
            elif kind == "commit":
                self.commits -= 1
                self.committed.append("")  # refused: no id stands for that utterance
            self.items.discard(item_id)
            self.deletions.discard(item_id)
        return True

    @property
    def error(self) -> str | None:
        return self.errors[-1] if self.errors else None
