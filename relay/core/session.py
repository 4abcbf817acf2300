"""What the relay knows about a session, so a fresh upstream can be made identical (F3).

Fed every client event the relay forwards and every server event it receives (except audio
deltas), it keeps the effective config (from the server's echoes), the conversation mirror with
original ids in order, the response in flight, the input audio the API still holds
(``relay.core.retention``), and the client events the upstream has not answered yet
(``relay.core.inflight``). No I/O; ``relay.core.replay`` turns it into the events a new
upstream needs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import pybase64

from relay.core.audio import encoding_of
from relay.core.inflight import InFlight, Pending
from relay.core.retention import AudioRetention

Event = dict[str, Any]
T = TypeVar("T")
READ_ONLY_SESSION_FIELDS = ("id", "object", "expires_at", "client_secret")
# The mirror is for replays: items older than the replay budget are never replayed, and audio
# kept in items (replay_user_audio=audio, or audio items the app created) is bounded per session;
# beyond it the oldest items fall back to their transcripts.
MAX_ITEM_AUDIO_CHARS = 8 * 1024 * 1024
MAX_TRANSCRIBING_BYTES = 15 * 1024 * 1024  # utterances committed and not yet transcribed
_ITEM_SLACK = 64  # items dropped at once when the mirror is over its bound (amortised)


def clone(value: T) -> T:
    """A deep copy of JSON-shaped data (all events are), ~6x faster than copy.deepcopy: the state
    copies every item, response and config it keeps, on the server-event path."""
    try:
        copied: T = orjson.loads(orjson.dumps(value))
    except TypeError:  # not JSON-shaped after all (an integer beyond 64 bits, say)
        return copy.deepcopy(value)
    return copied


class SessionState:
    def __init__(self, *, retain_user_audio: bool = False, max_items: int = 500) -> None:
        self.retain_user_audio = retain_user_audio
        self.max_items = max(1, max_items)
        self.config: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        # At least the audio characters held in items: only over the bound are they walked and
        # measured (a walk per added item cost ~0.3 ms at 500 items, twice a turn).
        self._item_audio_chars = 0
        self._ids: set[str] = set()  # of the items: a new item is not searched for among hundreds
        # Each item's replay form as JSON, with its token count, by item id (for snapshots:
        # relay.core.replay.encoded_replay_items). It goes when the item changes or leaves.
        self.replay_forms: dict[str, tuple[str, bytes, int]] = {}
        # Since a replacement: the items the current upstream holds only as the relay replayed
        # them (an assistant's audio as text), and those the replay's budget left out, which it
        # does not hold at all (relay.core.replayed answers the app about them).
        self.replayed_ids: set[str] = set()
        self.left_out_ids: set[str] = set()
        self.audio = AudioRetention()
        self.in_flight = InFlight()
        self.retained_audio: dict[str, bytes] = {}  # committed user audio, by item id
        # Transcription sessions: each committed utterance's audio until its transcript is out,
        # so a replacement upstream can transcribe it again (by the app's item id, commit order).
        self.transcribing: dict[str, bytes] = {}
        self.active_response: dict[str, Any] | None = None  # response.created's response
        self.partial: dict[str, Any] | None = None  # the output item being streamed
        self.partial_text = ""
        self.partial_audio_bytes = 0  # of the item being streamed, from its deltas' sizes
        self.response_heard = False  # the active response finished an output item already
        # The app's parameters (instructions, tools, ...) of the response it asked for and of the
        # active one: a response asked for again after a drop is asked for as the app did.
        self.requested_params: dict[str, Any] | None = None
        self.active_params: dict[str, Any] | None = None
        self.response_requested = False
        self.out_of_band_requested = 0  # the app's own response.create with conversation "none"
        self.speech_in_progress = False
        self._vad_turn_ended = False

    # ------------------------------------------------------------------ queries
    @property
    def response_active(self) -> bool:
        return self.active_response is not None or self.response_requested

    def is_quiet(self) -> bool:
        """A safe moment to switch upstreams: no response, no speech, no client event in flight.

        Audio that is not committed is allowed: it is replayed (with VAD only the padding the
        API keeps between utterances, so an open microphone never stops a rotation).
        """
        return not (self.response_active or self.speech_in_progress or self.in_flight or self.transcribing)

    def at_response_boundary(self) -> bool:
        """No response in flight (speech and client events may be: they are replayed)."""
        return not self.response_active

    @property
    def transcription(self) -> bool:
        """A transcription session (``?intent=transcription``): transcripts, no conversation."""
        return self.config.get("type") == "transcription"

    def find(self, item_id: str) -> dict[str, Any] | None:
        index = self.index_of(item_id)
        return None if index is None else self.items[index]

    def index_of(self, item_id: str) -> int | None:
        """Where the item with ``item_id`` is, searched from the newest: events name recent
        items, and a long conversation holds hundreds."""
        if isinstance(item_id, str) and item_id not in self._ids:
            return None
        items = self.items
        for index in range(len(items) - 1, -1, -1):
            if items[index].get("id") == item_id:
                return index
        return None

    def replace_items(self, items: list[dict[str, Any]]) -> None:
        """A conversation restored (from a snapshot): its audio is counted afresh."""
        self.items = items
        self._ids = set(_ids_of(items))
        self.replay_forms.clear()
        self._item_audio_chars = sum(map(_audio_chars, items))

    def item_changed(self, item: dict[str, Any]) -> None:
        """``item`` is new or was changed in place: its kept replay form goes, and its audio is
        counted (an upper bound: audio it replaced is not taken off until the bound is walked)."""
        item_id = item.get("id")
        if isinstance(item_id, str):
            self.replay_forms.pop(item_id, None)
        self._item_audio_chars += _audio_chars(item)

    def keep_item(self, item: dict[str, Any]) -> None:
        """An item the relay itself adds at the end (what the user heard of a cut answer)."""
        self.items.append(item)
        self._entered(item)
        self._bound()

    def _entered(self, item: dict[str, Any]) -> None:
        if isinstance(item_id := item.get("id"), str):
            self._ids.add(item_id)
        self.item_changed(item)  # a new object, whatever was kept under its id

    def _left(self, item_id: str) -> None:
        self._ids.discard(item_id)
        self.replay_forms.pop(item_id, None)
        self.replayed_ids.discard(item_id)
        self.left_out_ids.discard(item_id)

    def mark_replayed(self, item_ids: set[str]) -> None:
        """A replacement upstream was given these items, and none of the others."""
        self.replayed_ids = item_ids & self._ids
        self.left_out_ids = self._ids - item_ids

    def shown_item(self, item_id: str) -> dict[str, Any] | None:
        """An item as the API showed it to the app (its ``retrieved`` form, less audio the relay
        does not keep): the relay's own fields left out, a truncated answer's transcript gone."""
        item = self.find(item_id)
        if item is None:
            return None
        shown = {k: clone(v) for k, v in item.items() if not k.startswith("_")}
        if item.get("_truncated_ms") is not None:
            for part in shown.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_audio":
                    part["transcript"] = ""  # the API drops it on truncate
        return shown

    # ------------------------------------------------------------------ client side
    def on_client_event(self, event: Event) -> None:
        """A client event sent to the current upstream (appends: :meth:`append_audio`)."""
        kind = event.get("type")
        if kind == "response.create":
            params = event.get("response")
            if isinstance(params, dict) and params.get("conversation") == "none":
                self.out_of_band_requested += 1
            else:
                self.response_requested = True
                self.requested_params = clone(params) if isinstance(params, dict) and params else None
            return
        self.in_flight.sent(clone(event), self.audio.end)
        if kind == "input_audio_buffer.commit":
            self.audio.pinned_from = self.audio.origin

    def append_audio(self, audio: bytes, now: float | None = None) -> None:
        """Audio sent upstream (at ``now``, monotonic): a replacement upstream may need it again."""
        self.audio.append(audio, now)

    # ------------------------------------------------------------------ server side
    def on_server_event(self, event: Event) -> None:
        handler = _SERVER_HANDLERS.get(str(event.get("type")))
        if handler is not None:
            handler(self, event)

    def _answered(self, event: Event) -> Pending | None:
        answered = self.in_flight.answered(event)
        if answered is not None and answered.event.get("type") == "input_audio_buffer.commit":
            self._unpin()
        return answered

    def _unpin(self) -> None:
        commits = self.in_flight.of_type("input_audio_buffer.commit")
        self.audio.pinned_from = self.audio.origin if commits else None

    def _session(self, event: Event) -> None:
        self.set_config(event)
        if event.get("type") == "session.updated":
            self._answered(event)

    def set_config(self, event: Event) -> None:
        """The effective configuration, as a ``session.created`` / ``session.updated`` shows it
        (also for the relay's own updates, whose echoes answer no client event)."""
        session = event.get("session")
        if isinstance(session, dict):
            self.config = {k: clone(v) for k, v in session.items() if k not in READ_ONLY_SESSION_FIELDS}
            self.audio.configure(encoding_of(session), _turn_detection(session))

    def _error(self, event: Event) -> None:
        raw = event.get("error")
        error: dict[str, Any] = raw if isinstance(raw, dict) else {}
        rejected = self.in_flight.rejected(error)
        if rejected is not None:
            if rejected.event.get("type") == "input_audio_buffer.commit":
                self._unpin()
        elif error.get("code") == "conversation_already_has_active_response":
            self.response_requested = self.active_response is not None
            self.requested_params = None  # refused: its parameters are no one's

    def _item_added(self, event: Event) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or not item.get("id"):
            return
        self._answered(event)
        existing = self.find(item["id"])
        if existing is not None:
            existing.update(clone(item))
            self.item_changed(existing)
            return
        previous = event.get("previous_item_id")
        position = len(self.items)
        if previous == "root":
            position = 0
        elif isinstance(previous, str):
            before = self.index_of(previous)
            position = len(self.items) if before is None else before + 1
        self.items.insert(position, clone(item))
        if item.get("role") == "user" and item["id"] in self.retained_audio:
            self._attach_audio(self.items[position])
        self._entered(self.items[position])
        self._bound()

    def _bound(self) -> None:
        """Keep the mirror to what a replay can use: the newest items, and bounded audio."""
        if len(self.items) > self.max_items + _ITEM_SLACK:
            dropped = len(self.items) - self.max_items
            for item_id in _ids_of(self.items[:dropped]):
                self._left(item_id)
            del self.items[:dropped]
        if self._item_audio_chars <= MAX_ITEM_AUDIO_CHARS:
            return
        budget = MAX_ITEM_AUDIO_CHARS
        for item in reversed(self.items):  # the newest keep their audio
            for part in item.get("content") or []:
                audio = part.get("audio") if isinstance(part, dict) else None
                if isinstance(audio, str):
                    budget -= len(audio)
                    if budget < 0:
                        del part["audio"]  # replayed from its transcript instead
                        self.item_changed(item)
        self._item_audio_chars = MAX_ITEM_AUDIO_CHARS - max(budget, 0)

    def _item_done(self, event: Event) -> None:
        item = event.get("item")
        if event.get("type") == "conversation.item.retrieved":
            self._answered(event)
            item_id = item.get("id") if isinstance(item, dict) else None
            if item_id in self.replayed_ids or item_id in self.left_out_ids:
                return  # the replay's form, or the mirror's own: the mirror has the original
        if isinstance(item, dict) and item.get("id"):
            existing = self.find(item["id"])
            if existing is not None:
                existing.update(clone(item))
                self.item_changed(existing)

    def _transcribed(self, event: Event) -> None:
        self._transcribed_or_failed(event)
        item = self.find(str(event.get("item_id")))
        content = item.get("content") if item else None
        index = event.get("content_index", 0)
        if item is not None and isinstance(content, list) and isinstance(index, int) and index < len(content):
            content[index]["transcript"] = event.get("transcript")
            self.item_changed(item)

    def _truncated(self, event: Event) -> None:
        self._answered(event)
        item = self.find(str(event.get("item_id")))
        if item is not None:
            item["_truncated_ms"] = event.get("audio_end_ms")
            self.item_changed(item)

    def _deleted(self, event: Event) -> None:
        self._answered(event)
        if isinstance(item_id := event.get("item_id"), str):
            self.forget({item_id})

    def _committed(self, event: Event) -> None:
        answered = self._answered(event)
        item_id = event.get("item_id")
        if self.retain_user_audio and isinstance(item_id, str):
            stop = answered.position if answered is not None else self.audio.end
            audio = self.audio.segment(self.audio.origin, stop)
            if len(audio) * 4 // 3 <= MAX_ITEM_AUDIO_CHARS:
                self.retained_audio[item_id] = audio
        if self.transcription and isinstance(item_id, str):
            stop = answered.position if answered is not None else self.audio.committed_stop()
            self._keep_for_transcription(item_id, self.audio.segment(self.audio.origin, stop))
        if answered is not None:
            self.audio.cut(answered.position)
        else:
            self.audio.server_committed()
        self.speech_in_progress = False
        vad_turn, self._vad_turn_ended = self._vad_turn_ended, False
        if vad_turn and self._turn_detection_creates_responses():
            # The server starts a response for this turn by itself; until response.created
            # arrives it is owed, and a replacement upstream must be asked for it again.
            self.response_requested = True
            self.requested_params = None  # the session's own defaults

    def _keep_for_transcription(self, item_id: str, audio: bytes) -> None:
        self.transcribing[item_id] = audio
        total = sum(len(a) for a in self.transcribing.values())
        for older in list(self.transcribing)[:-1]:  # bounded: the oldest's audio goes first
            if total <= MAX_TRANSCRIBING_BYTES:
                break
            total -= len(self.transcribing[older])
            self.transcribing[older] = b""

    def _transcribed_or_failed(self, event: Event) -> None:
        self.transcribing.pop(str(event.get("item_id")), None)

    def _turn_detection_creates_responses(self) -> bool:
        if self.transcription:
            return False
        detection = _turn_detection(self.config)
        return isinstance(detection, dict) and detection.get("create_response", True) is not False

    def _cleared(self, event: Event) -> None:
        answered = self._answered(event)
        self.audio.cut(answered.position if answered is not None else self.audio.end)

    def _speech(self, event: Event) -> None:
        kind = event.get("type")
        self.speech_in_progress = kind == "input_audio_buffer.speech_started"
        if self.speech_in_progress:
            self.audio.speech_started(event.get("audio_start_ms"))
        else:
            self.audio.speech_stopped(event.get("audio_end_ms"))
        # A turn the server detected (not a client's manual commit) gets its response from the server.
        self._vad_turn_ended = not self.speech_in_progress

    def _attach_audio(self, item: dict[str, Any]) -> None:
        content = item.get("content") or []
        if content and content[0].get("type") == "input_audio":
            content[0]["audio"] = pybase64.b64encode_as_string(self.retained_audio.pop(item["id"]))

    # ------------------------------------------------------------------ responses
    def _response_created(self, event: Event) -> None:
        response = event.get("response")
        if not isinstance(response, dict) or self._out_of_band(response):
            return
        self.active_response = clone(response)
        self.response_requested = False
        self.partial, self.partial_text = None, ""
        self.response_heard = False
        self.active_params, self.requested_params = self.requested_params, None

    def _out_of_band(self, response: dict[str, Any]) -> bool:
        """Whether a response writes outside the conversation (reference §2.6).

        The live API says so with ``conversation_id: null``; servers that omit the field leave
        it to the app's own requests: a response is out-of-band only when the app asked for one
        (``conversation: "none"``) and no in-conversation response is owed. A response that
        cannot be attributed counts as in the conversation, so it is never lost track of.
        """
        if "conversation_id" in response:
            out_of_band = response["conversation_id"] is None
        else:
            out_of_band = self.out_of_band_requested > 0 and not self.response_requested
        if out_of_band and self.out_of_band_requested:
            self.out_of_band_requested -= 1
        return out_of_band

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

    def unheard_response(self) -> bool:
        """A response is streaming and the app has had nothing of it yet to play, show or act on
        (no text, no audio, no finished item: the model had not started, or was writing a tool
        call's arguments)."""
        return (
            self.active_response is not None
            and not self.response_heard
            and not self.partial_text
            and not self.partial_audio_bytes
        )

    def forget(self, item_ids: set[str]) -> None:
        """Items the conversation is to go on without (an answer cut before anything of it)."""
        self.items = [item for item in self.items if item.get("id") not in item_ids]
        for item_id in item_ids:
            self._left(item_id)

    def _output_item_done(self, event: Event) -> None:
        if self.active_response is not None:
            self.response_heard = True
        item = event.get("item")
        stored = self.find(str(item.get("id"))) if isinstance(item, dict) else None
        if stored is not None:
            self._item_done(event)
        if self.partial is not None and isinstance(item, dict) and item.get("id") == self.partial.get("id"):
            if stored is not None and self.partial_audio_bytes:
                stored["_audio_ms"] = self.partial_audio_bytes / self._output_bytes_per_ms()
                self.item_changed(stored)
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


@dataclass
class Interruption:
    """What an upstream's replacement does to the response in flight."""

    done: Event | None  # the response.done the client must get (None: nothing was streaming)
    # The parameters to ask for the response again on the replacement ({}: the session's own);
    # None: nothing to ask (the user heard part of it, or it is a call's, which lives on).
    again: dict[str, Any] | None


def interrupt_response(
    state: SessionState, reason: str, *, own_session: bool, ask_again: bool
) -> Interruption:
    """End the response in flight for a replacement upstream (a drop, a move to another process).

    Cut before the app had anything of it, or asked for and not started: closed for the app, and
    (``ask_again``) asked for again on the replacement, so that the user is not left waiting in
    silence for an answer that will never come. A phone call's session lives on at the API (a
    dropped control socket does not end the call), so nothing of it is ended or asked again.
    """
    if not own_session:
        return Interruption(None, None)
    not_started = state.response_requested and state.active_response is None
    unheard = state.unheard_response()
    params = state.active_params if unheard else state.requested_params
    done = interrupted_response_done(state, reason)
    if not ask_again or not (not_started or unheard):
        return Interruption(done, None)
    if done is not None:  # what it had begun (a tool call's arguments) is not the conversation's
        state.forget({str(item.get("id")) for item in done["response"]["output"]})
    return Interruption(done, clone(params) if params else {})


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
            state.item_changed(existing)
    done = dict(response)
    # No API reason fits (it has only max_output_tokens and content_filter for an incomplete
    # response, and SDKs refuse others): the cause goes in the error the schema allows.
    details = {"type": "incomplete", "error": {"type": "server_error", "code": reason}}
    done.update(status="incomplete", output=output, usage=None, status_details=details)
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
    "conversation.item.input_audio_transcription.failed": SessionState._transcribed_or_failed,
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


def _ids_of(items: list[dict[str, Any]]) -> Iterator[str]:
    return (item_id for item in items if isinstance(item_id := item.get("id"), str))


def _audio_chars(item: dict[str, Any]) -> int:
    """The base64 audio characters an item's content carries."""
    content = item.get("content")
    if not isinstance(content, list):
        return 0
    parts = (part.get("audio") for part in content if isinstance(part, dict))
    return sum(len(audio) for audio in parts if isinstance(audio, str))


def _turn_detection(session: dict[str, Any]) -> Any:
    """The effective turn detection (GA ``audio.input.turn_detection``, or the beta key)."""
    audio = session.get("audio")
    audio_input = audio.get("input") if isinstance(audio, dict) else None
    if isinstance(audio_input, dict):
        return audio_input.get("turn_detection")
    return session.get("turn_detection", {"type": "server_vad"})
