"""The events that make a fresh upstream identical to the old one, and the echoes they cause.

Order (design.md "Replay, precisely"): the full ``session.update``; one
``conversation.item.create`` per item with its original id, chained by ``previous_item_id``;
then the audio appended since the last commit. Assistant audio becomes ``output_text`` with its
transcript (the API cannot take assistant audio); user audio becomes its transcript or, when
retained, the audio itself. Client events the old upstream never acknowledged are re-sent after
the switch, as the client's own (their answers are the client's to see).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from relay.core.session import SessionState, clone

Event = dict[str, Any]
_ITEM_ECHOES = frozenset({"conversation.item.added", "conversation.item.done", "conversation.item.created"})
_APPEND_CHUNK_CHARS = 1024 * 1024


@dataclass
class ReplayPlan:
    events: list[Event]
    item_ids: list[str]
    replayed: int
    trimmed: int
    resend: list[Event] = field(default_factory=list)


def plan_replay(
    state: SessionState,
    *,
    max_items: int = 500,
    max_tokens: int = 24_000,
    user_audio: Literal["transcript", "audio"] | str = "transcript",
) -> ReplayPlan:
    config = {k: clone(v) for k, v in state.config.items() if not k.startswith("_")}
    config.setdefault("type", "realtime")
    events: list[Event] = [{"type": "session.update", "session": config}]
    kept = _within_budget(state.items, max_items, max_tokens)
    previous: str | None = None
    for item in kept:
        create: Event = {"type": "conversation.item.create", "item": replayable(item, user_audio)}
        if previous is not None:
            create["previous_item_id"] = previous
        events.append(create)
        previous = item["id"]
    events += _audio_appends(state.uncommitted_audio)
    resend = [clone(e) for e in (*state.pending_updates, *state.pending_creates)]
    return ReplayPlan(events, [i["id"] for i in kept], len(kept), len(state.items) - len(kept), resend)


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


def _within_budget(items: list[dict[str, Any]], max_items: int, max_tokens: int) -> list[dict[str, Any]]:
    """The newest items that fit, oldest trimmed first; outputs never outlive their call."""
    kept: list[dict[str, Any]] = []
    tokens = 0
    for item in reversed(items):
        cost = _tokens(item)
        if len(kept) >= max_items or tokens + cost > max_tokens:
            break
        kept.append(item)
        tokens += cost
    kept.reverse()
    calls = {i.get("call_id") for i in kept if i.get("type") == "function_call"}
    return [i for i in kept if i.get("type") != "function_call_output" or i.get("call_id") in calls]


def _audio_appends(chunks: list[str]) -> list[Event]:
    """Uncommitted audio re-sent as appends, joined into few large events."""
    appends: list[Event] = []
    current = ""
    for chunk in chunks:
        if current and len(current) + len(chunk) > _APPEND_CHUNK_CHARS:
            appends.append({"type": "input_audio_buffer.append", "audio": current})
            current = ""
        current += chunk
    if current:
        appends.append({"type": "input_audio_buffer.append", "audio": current})
    return appends


class EchoFilter:
    """Recognises the new upstream's answers to a replay, which the client must not see."""

    def __init__(self, plan: ReplayPlan) -> None:
        self.waiting_update = True
        self.waiting_items = set(plan.item_ids)
        self.replayed_items = set(plan.item_ids)
        self.error: str | None = None

    @property
    def done(self) -> bool:
        return not self.waiting_update and not self.waiting_items

    def suppress(self, event: Event) -> bool:
        kind = event.get("type")
        if kind == "session.updated" and self.waiting_update:
            self.waiting_update = False
            return True
        if kind in _ITEM_ECHOES:
            item_id = (event.get("item") or {}).get("id")
            if item_id in self.replayed_items:
                if kind != "conversation.item.added":
                    self.waiting_items.discard(item_id)
                return True
        if kind == "error":
            error = event.get("error") or {}
            self.error = f"{error.get('code')}: {error.get('message')}"
            return True
        return False
