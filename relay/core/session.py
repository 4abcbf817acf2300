"""What the relay knows about a session, so a fresh upstream can be made identical (F3).

Fed every client event the relay forwards and every server event it receives (except audio
deltas), it keeps the effective config (from the server's echoes), the conversation mirror with
original ids in order, the response in flight, the audio appended since the last commit, and
the client events the old upstream had not acknowledged yet. No I/O; ``relay.core.replay``
turns it into the events a new upstream needs.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any, TypeVar

import orjson

Event = dict[str, Any]
T = TypeVar("T")
READ_ONLY_SESSION_FIELDS = ("id", "object", "expires_at", "client_secret")
MAX_UNCOMMITTED_AUDIO_CHARS = 20 * 1024 * 1024  # ~15 MiB of audio as base64


def clone(value: T) -> T:
    """A deep copy of JSON-shaped data (all events are), ~6x faster than copy.deepcopy: the state
    copies every item, response and config it keeps, on the server-event path."""
    try:
        copied: T = orjson.loads(orjson.dumps(value))
    except TypeError:  # not JSON-shaped after all (an integer beyond 64 bits, say)
        return copy.deepcopy(value)
    return copied


class SessionState:
    def __init__(self, *, retain_user_audio: bool = False) -> None:
        self.retain_user_audio = retain_user_audio
        self.config: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        self.uncommitted_audio: list[str] = []
        self._uncommitted_chars = 0
        self.retained_audio: dict[str, list[str]] = {}
        self.pending_creates: deque[Event] = deque()
        self.pending_updates: deque[Event] = deque()
        self.active_response: dict[str, Any] | None = None  # response.created's response
        self.partial: dict[str, Any] | None = None  # the output item being streamed
        self.partial_text = ""
        self.partial_audio_bytes = 0  # of the item being streamed, from its deltas' sizes
        self.response_requested = False
        self.speech_in_progress = False
        self._vad_turn_ended = False
        # Server events that changed the state: a replay planned before any of them is stale.
        self.server_changes = 0

    # ------------------------------------------------------------------ queries
    @property
    def response_active(self) -> bool:
        return self.active_response is not None or self.response_requested

    def is_quiet(self) -> bool:
        """A safe moment to switch upstreams: nothing in flight in either direction."""
        return not (
            self.response_active
            or self.speech_in_progress
            or self.uncommitted_audio
            or self.pending_creates
            or self.pending_updates
        )

    def at_response_boundary(self) -> bool:
        """No response, speech or unacknowledged event in flight (uncommitted audio allowed)."""
        return not (
            self.response_active or self.speech_in_progress or self.pending_creates or self.pending_updates
        )

    def find(self, item_id: str) -> dict[str, Any] | None:
        return next((item for item in self.items if item.get("id") == item_id), None)

    # ------------------------------------------------------------------ client side
    def on_client_event(self, event: Event) -> None:
        kind = event.get("type")
        if kind in ("input_audio_buffer.append", "session.input_audio_buffer.append"):
            self.append_audio(event.get("audio"))
        elif kind == "conversation.item.create":
            self.pending_creates.append(clone(event))
        elif kind == "session.update":
            self.pending_updates.append(clone(event))
        elif kind == "response.create":
            params = event.get("response")
            if not (isinstance(params, dict) and params.get("conversation") == "none"):
                self.response_requested = True
        elif kind == "input_audio_buffer.clear":
            self._drop_uncommitted()

    def append_audio(self, audio: Any) -> None:
        """Audio sent upstream and not committed yet: a replacement upstream gets it again."""
        if isinstance(audio, str) and self._uncommitted_chars + len(audio) <= MAX_UNCOMMITTED_AUDIO_CHARS:
            self.uncommitted_audio.append(audio)
            self._uncommitted_chars += len(audio)

    def _drop_uncommitted(self) -> None:
        self.uncommitted_audio = []
        self._uncommitted_chars = 0

    # ------------------------------------------------------------------ server side
    def on_server_event(self, event: Event) -> None:
        handler = _SERVER_HANDLERS.get(str(event.get("type")))
        if handler is not None:
            self.server_changes += 1
            handler(self, event)

    def _session(self, event: Event) -> None:
        session = event.get("session")
        if isinstance(session, dict):
            self.config = {k: clone(v) for k, v in session.items() if k not in READ_ONLY_SESSION_FIELDS}
        if event.get("type") == "session.updated" and self.pending_updates:
            self.pending_updates.popleft()

    def _error(self, event: Event) -> None:
        raw = event.get("error")
        error: dict[str, Any] = raw if isinstance(raw, dict) else {}
        param = str(error.get("param") or "")
        if self.pending_updates and (
            param.startswith("session") or error.get("code") == "cannot_update_voice"
        ):
            self.pending_updates.popleft()
        elif self.pending_creates and (param.startswith("item") or param == "previous_item_id"):
            self.pending_creates.popleft()
        elif error.get("code") == "conversation_already_has_active_response":
            self.response_requested = self.active_response is not None

    def _item_added(self, event: Event) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or not item.get("id"):
            return
        self._settle_pending_create(item)
        existing = self.find(item["id"])
        if existing is not None:
            existing.update(clone(item))
            return
        previous = event.get("previous_item_id")
        position = len(self.items)
        if previous == "root":
            position = 0
        elif isinstance(previous, str):
            before = next((i for i, it in enumerate(self.items) if it.get("id") == previous), None)
            position = len(self.items) if before is None else before + 1
        self.items.insert(position, clone(item))
        if item.get("role") == "user" and item["id"] in self.retained_audio:
            self._attach_audio(self.items[position])

    def _settle_pending_create(self, item: dict[str, Any]) -> None:
        for pending in self.pending_creates:
            wanted = pending.get("item") or {}
            if wanted.get("id") == item["id"] or (
                not wanted.get("id")
                and wanted.get("type") == item.get("type")
                and wanted.get("role") == item.get("role")
            ):
                self.pending_creates.remove(pending)
                return

    def _item_done(self, event: Event) -> None:
        item = event.get("item")
        if isinstance(item, dict) and item.get("id"):
            existing = self.find(item["id"])
            if existing is not None:
                existing.update(clone(item))

    def _transcribed(self, event: Event) -> None:
        item = self.find(str(event.get("item_id")))
        content = item.get("content") if item else None
        index = event.get("content_index", 0)
        if isinstance(content, list) and isinstance(index, int) and index < len(content):
            content[index]["transcript"] = event.get("transcript")

    def _truncated(self, event: Event) -> None:
        item = self.find(str(event.get("item_id")))
        if item is not None:
            item["_truncated_ms"] = event.get("audio_end_ms")

    def _deleted(self, event: Event) -> None:
        self.items = [item for item in self.items if item.get("id") != event.get("item_id")]

    def _committed(self, event: Event) -> None:
        item_id = event.get("item_id")
        if self.retain_user_audio and isinstance(item_id, str):
            self.retained_audio[item_id] = self.uncommitted_audio
        self._drop_uncommitted()
        self.speech_in_progress = False
        vad_turn, self._vad_turn_ended = self._vad_turn_ended, False
        if vad_turn and self._turn_detection_creates_responses():
            # The server starts a response for this turn by itself; until response.created
            # arrives it is owed, and a replacement upstream must be asked for it again.
            self.response_requested = True

    def _turn_detection_creates_responses(self) -> bool:
        audio = self.config.get("audio")
        audio_input = audio.get("input") if isinstance(audio, dict) else None
        detection = audio_input.get("turn_detection") if isinstance(audio_input, dict) else None
        return isinstance(detection, dict) and detection.get("create_response", True) is not False

    def _cleared(self, event: Event) -> None:
        self._drop_uncommitted()

    def _speech(self, event: Event) -> None:
        self.speech_in_progress = event.get("type") == "input_audio_buffer.speech_started"
        # A turn the server detected (not a client's manual commit) gets its response from the server.
        self._vad_turn_ended = not self.speech_in_progress

    def _attach_audio(self, item: dict[str, Any]) -> None:
        content = item.get("content") or []
        if content and content[0].get("type") == "input_audio":
            content[0]["audio"] = "".join(self.retained_audio.pop(item["id"]))

    # ------------------------------------------------------------------ responses
    def _response_created(self, event: Event) -> None:
        response = event.get("response")
        if isinstance(response, dict) and response.get("conversation_id") is not None:
            self.active_response = clone(response)
            self.response_requested = False
            self.partial, self.partial_text = None, ""

    def _output_item_added(self, event: Event) -> None:
        if self.active_response is not None and event.get("response_id") == self.active_response["id"]:
            self.partial = clone(event.get("item"))
            self.partial_text = ""
            self.partial_audio_bytes = 0

    def on_audio_delta(self, base64_chars: int) -> None:
        """An audio delta of the item being streamed, by size only (deltas are never parsed):
        how long the item's audio is tells, after a truncation, how much of it was heard."""
        if self.partial is not None:
            self.partial_audio_bytes += base64_chars * 3 // 4

    def _text_delta(self, event: Event) -> None:
        if self.partial is not None and event.get("item_id") == self.partial.get("id"):
            self.partial_text += str(event.get("delta") or "")

    def _arguments_delta(self, event: Event) -> None:
        if self.partial is not None and event.get("item_id") == self.partial.get("id"):
            self.partial["arguments"] = str(self.partial.get("arguments") or "") + str(
                event.get("delta") or ""
            )

    def _output_item_done(self, event: Event) -> None:
        item = event.get("item")
        stored = self.find(str(item.get("id"))) if isinstance(item, dict) else None
        if stored is not None:
            self._item_done(event)
        if self.partial is not None and isinstance(item, dict) and item.get("id") == self.partial.get("id"):
            if stored is not None and self.partial_audio_bytes:
                stored["_audio_ms"] = self.partial_audio_bytes / self._output_bytes_per_ms()
            self.partial = None

    def _output_bytes_per_ms(self) -> int:
        """PCM16 at 24 kHz is 48 bytes a millisecond; G.711 (8 kHz, a byte a sample) is 8."""
        response = self.active_response or {}
        for source in (response, self.config):
            output = (source.get("audio") or {}).get("output") or {}
            fmt = output.get("format")
            if isinstance(fmt, dict) and fmt.get("type"):
                return 8 if fmt["type"] in ("audio/pcmu", "audio/pcma") else 48
        return 48

    def _response_done(self, event: Event) -> None:
        response = event.get("response")
        if (
            isinstance(response, dict)
            and self.active_response
            and response.get("id") == self.active_response["id"]
        ):
            self.active_response, self.partial, self.partial_text = None, None, ""


def interrupted_response_done(state: SessionState, reason: str) -> Event | None:
    """The one ``response.done`` a client must get for a response cut off by an upstream loss.

    The partial output stays in the conversation as what the user heard, so the replay keeps it.
    """
    response = state.active_response
    state.response_requested = False
    if response is None:
        return None
    output: list[dict[str, Any]] = []
    partial = state.partial
    if partial is not None and partial.get("id"):
        item = _finish_partial(state, partial)
        output.append(item)
        existing = state.find(item["id"])
        if existing is not None:
            existing.update(clone(item))
    done = dict(response)
    done.update(
        status="incomplete",
        output=output,
        usage=None,
        status_details={"type": "incomplete", "reason": reason},
    )
    state.active_response, state.partial, state.partial_text = None, None, ""
    return {"type": "response.done", "event_id": "event_relay_" + str(response.get("id")), "response": done}


def _finish_partial(state: SessionState, partial: dict[str, Any]) -> dict[str, Any]:
    item = clone(partial)
    item["status"] = "incomplete"
    if item.get("type") == "message":
        modalities = (state.active_response or {}).get("output_modalities") or ["audio"]
        if "audio" in modalities:
            item["content"] = [{"type": "output_audio", "transcript": state.partial_text}]
        else:
            item["content"] = [{"type": "output_text", "text": state.partial_text}]
    return item


_SERVER_HANDLERS = {
    "session.created": SessionState._session,
    "session.updated": SessionState._session,
    "error": SessionState._error,
    "conversation.item.added": SessionState._item_added,
    "conversation.item.created": SessionState._item_added,
    "conversation.item.done": SessionState._item_done,
    "conversation.item.retrieved": SessionState._item_done,
    "conversation.item.input_audio_transcription.completed": SessionState._transcribed,
    "conversation.item.truncated": SessionState._truncated,
    "conversation.item.deleted": SessionState._deleted,
    "input_audio_buffer.committed": SessionState._committed,
    "input_audio_buffer.cleared": SessionState._cleared,
    "input_audio_buffer.speech_started": SessionState._speech,
    "input_audio_buffer.speech_stopped": SessionState._speech,
    "input_audio_buffer.timeout_triggered": SessionState._speech,
    "response.created": SessionState._response_created,
    "response.output_item.added": SessionState._output_item_added,
    "response.output_audio_transcript.delta": SessionState._text_delta,
    "response.output_text.delta": SessionState._text_delta,
    "response.function_call_arguments.delta": SessionState._arguments_delta,
    "response.output_item.done": SessionState._output_item_done,
    "response.done": SessionState._response_done,
}
