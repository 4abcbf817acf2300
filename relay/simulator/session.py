"""One simulated Realtime session: client events in, server events out, like the GA API.

Schema errors come from the same validator the relay uses; the errors only a live session can
know (an empty commit, an active response, unknown item ids, the voice lock) are raised here with
the API's codes and messages. Errors are not fatal, as on the real API.
"""

from __future__ import annotations

import asyncio
import binascii
import math
import sys
from typing import Any

import pybase64

from relay.core.beta_translator import BetaTranslator
from relay.core.errors import InvalidEvent, new_id
from relay.core.protocol import TRANSCRIPTION_CLIENT_EVENT_TYPES, Interface
from relay.core.validation import Validator, parse_client_frame, quote_list
from relay.simulator.audio import bytes_per_ms
from relay.simulator.config import SimulatorConfig
from relay.simulator.responding import Responding
from relay.simulator.responses import Emit, ResponseStreamer, obfuscation, public_item, words
from relay.simulator.state import (
    Conversation,
    apply_session_update,
    default_session,
    default_transcription_session,
    input_encoding,
)
from relay.simulator.timing import Outbox
from relay.simulator.vad import VadEvent, VoiceActivityDetector

_KEPT_TYPES = 200_000
# A transcription takes longer for a longer utterance: Timing.transcription_ms more for each
# this many ms of audio (an estimate; the API publishes no figure).
TRANSCRIPTION_MS_PER_BASE = 6000
_KEPT_INPUT_AUDIO_BYTES = 8 * 1024 * 1024  # ~3 minutes of PCM16 per session
# Azure's GA endpoint repeats a content part under a second key (recordings: azure-*.yaml).
_AZURE_PART_EVENTS = frozenset({"response.content_part.added", "response.content_part.done"})
_APPEND_TYPE = b'"input_audio_buffer.append"'
_HANDLER_NAMES: dict[str, str] = {}  # event type -> handler method name, built once per type
_VALIDATORS = {Interface.GA: Validator(Interface.GA), Interface.BETA: Validator(Interface.BETA)}


class SimSession(Responding):
    def __init__(
        self,
        config: SimulatorConfig,
        model: str,
        emit: Emit,
        script: Any,
        *,
        beta: bool = False,
        azure: bool = False,
        transcription: bool = False,
    ) -> None:
        self.config = config
        self.azure = azure
        # The beta interface is served by speaking GA inside and converting at the edge with the
        # protocol's own mapping table (beta shapes in, beta names out), as the API did.
        self.beta = BetaTranslator() if beta else None
        self.transcription = transcription  # ?intent=transcription: transcripts, no responses
        self.session = (
            default_transcription_session(config.session_max_s)
            if transcription
            else default_session(model, config.session_max_s)
        )
        self.id: str = self.session["id"]
        self.conversation = Conversation()
        self.conversation_id = new_id("conv_")
        # Everything goes out through the outbox: acknowledgements wait out the API's delay
        # there without holding up the socket reader, and nothing overtakes what was sent first.
        self.outbox = Outbox(emit)
        self.ack_s = config.timing.ack_ms / 1000
        self.script = script
        self.buffer: list[bytes] = []  # appended chunks: joined once, at the commit
        self.buffered_bytes = 0
        self.buffer_start_ms = 0
        self.vad: VoiceActivityDetector | None = None
        self.active: asyncio.Task[None] | None = None
        self.streaming: set[asyncio.Task[None]] = set()
        self.active_streamer: ResponseStreamer | None = None
        self.assistant_audio = False
        self.tracing_enabled = False
        self.received: list[str] = []  # event types, interned: cheap even for hours of appends
        self.pending_user_item: str | None = None
        # Committed user audio by item id, for conversation.item.retrieved (the API returns it),
        # oldest dropped beyond a budget: hours of speech must not live in the simulator.
        self.input_audio: dict[str, bytes] = {}
        self.input_audio_bytes = 0
        self._reset_vad()

    async def emit(self, event: dict[str, Any], *, gap_s: float = 0.0) -> None:
        """Send a server event (the current reply, if any), ``gap_s`` after the one before it."""
        full = {"type": event["type"], "event_id": new_id("event_"), **event}
        if self.azure and full["type"] in _AZURE_PART_EVENTS:
            full["content"] = full["part"]
        if self.beta is not None:
            translated = self.beta.server_to_beta(full)
            if translated is None:
                return
            full = translated
        await self.outbox.send(full, gap_s=gap_s)

    async def reply(self, event: dict[str, Any]) -> None:
        """Answer a client frame the session could not handle (binary, a simulator bug) as is."""
        with self.outbox.replying(self.ack_s):
            await self.outbox.send(event)

    # ------------------------------------------------------------------ dispatch
    async def handle_frame(self, raw: str | bytes) -> None:
        arrived = self.outbox.now()
        with self.outbox.replying(self.ack_s, since=arrived):
            try:
                event = parse_client_frame(raw)
                event_type = sys.intern(str(event["type"]))
                self._note_received(event_type)
                # Appends are never acknowledged: what VAD makes of them follows the audio at once.
                delay = 0.0 if event_type == "input_audio_buffer.append" else self.ack_s
                with self.outbox.replying(delay, since=arrived):
                    await self._handle(event)
            except InvalidEvent as exc:
                error = exc.to_event()
                beta_error = self.beta.server_to_beta(error) if self.beta is not None else None
                await self.outbox.send(beta_error or error)

    async def _handle(self, event: dict[str, Any]) -> None:
        if self.beta is None:
            _VALIDATORS[Interface.GA].check(event)
            await self._dispatch(event)
            return
        _VALIDATORS[Interface.BETA].check(event)
        for ga_event in self.beta.client_to_ga(event):
            await self._dispatch(ga_event)

    def append_now(self, raw: bytes) -> bool:
        """Take a plain GA audio append synchronously when there is no VAD to feed (the 20 ms
        frame that dominates every session). False, having changed nothing: the frame takes the
        general path, which also produces any error."""
        if self.vad is not None or self.beta is not None or _APPEND_TYPE not in raw[:64]:
            return False
        try:
            event = parse_client_frame(raw)
            if event.get("type") != "input_audio_buffer.append" or not Validator.is_plain_append(event):
                return False
            audio = pybase64.b64decode(event["audio"], None, True)  # validate=True
        except (InvalidEvent, binascii.Error, ValueError):
            return False
        self._note_received("input_audio_buffer.append")
        self._buffer_audio(audio)
        return True

    def _note_received(self, event_type: str) -> None:
        if len(self.received) < _KEPT_TYPES:
            self.received.append(event_type)

    async def _dispatch(self, event: dict[str, Any]) -> None:
        if self.transcription and event["type"] not in TRANSCRIPTION_CLIENT_EVENT_TYPES:
            supported = quote_list(TRANSCRIPTION_CLIENT_EVENT_TYPES)
            message = f"Invalid value: '{event['type']}'. Supported values are: {supported}."
            raise self._fail(event, "invalid_value", message, "type")
        name = _HANDLER_NAMES.get(event["type"])
        if name is None:
            name = _HANDLER_NAMES[event["type"]] = "_on_" + event["type"].replace(".", "_")
        handler = getattr(self, name, None)
        if handler is not None:
            await handler(event)

    # ------------------------------------------------------------------ session
    async def start(self) -> None:
        await self.emit({"type": "session.created", "session": self.session})

    def configure(self, session: dict[str, Any]) -> None:
        """Start from ``session`` instead of the default one (a phone call, accepted with its
        configuration before any socket is attached: ``relay.simulator.calls``)."""
        self.session = session
        self.id = session["id"]
        self._reset_vad()

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        update = event["session"]
        kind = "transcription" if self.transcription else "realtime"
        if update.get("type", "realtime") != kind:
            raise self._fail(
                event,
                "invalid_parameter",
                f"Passing a {update.get('type')} session update event to a {kind} session is not allowed.",
                "session.type",
            )
        if "model" in update and update["model"] != self.session.get("model"):
            raise self._fail(event, "invalid_value", "Cannot update a session's model.", "session.model")
        new = apply_session_update(self.session, update)
        if (
            self.assistant_audio
            and new["audio"]["output"]["voice"] != self.session["audio"]["output"]["voice"]
        ):
            raise self._fail(
                event,
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
            )
        if self.session.get("tracing") not in (None,) and new.get("tracing") != self.session["tracing"]:
            raise self._fail(
                event,
                "invalid_value",
                "Tracing cannot be modified once enabled.",
                "session.tracing",
            )
        self.session = new
        self._reset_vad()
        # Applied now, so the frames behind it see the new config; answered after the API's time.
        self.outbox.delay_reply(self.config.timing.session_update_ms / 1000)
        await self.emit({"type": "session.updated", "session": self.session})

    def _reset_vad(self) -> None:
        detection = self.session["audio"]["input"].get("turn_detection")
        position = self.vad.position_ms if self.vad else 0
        self.vad = VoiceActivityDetector(detection, input_encoding(self.session)) if detection else None
        if self.vad is not None:
            self.vad.position_ms = position

    # ------------------------------------------------------------------ input audio
    async def _on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        try:
            audio = pybase64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            raise self._fail(
                event,
                "invalid_value",
                "Invalid 'audio'. Expected base64-encoded "
                "audio bytes (mono PCM16 at 24kHz) but got an invalid value.",
                "audio",
            ) from None
        self._buffer_audio(audio)
        if self.vad is not None:
            for vad_event in self.vad.feed(audio):
                await self._on_vad(vad_event)

    async def take_line_audio(self, audio: bytes) -> None:
        """A phone caller's audio, arriving from the call's line rather than a client socket:
        buffered and fed to turn detection exactly as an append's audio is."""
        self._buffer_audio(audio)
        if self.vad is not None:
            for vad_event in self.vad.feed(audio):
                await self._on_vad(vad_event)

    async def _on_vad(self, vad: VadEvent) -> None:
        detection = self.session["audio"]["input"]["turn_detection"] or {}
        if vad.kind == "speech_started":
            await self._speech_started(vad, detection)
            return
        if vad.kind == "speech_stopped":
            item_id = self.pending_user_item or new_id("item_")
            stopped = {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": vad.audio_end_ms}
            await self.emit({**stopped, "item_id": item_id})
        else:
            item_id = new_id("item_")
            timeout = {"type": "input_audio_buffer.timeout_triggered", "item_id": item_id}
            await self.emit(
                {**timeout, "audio_start_ms": vad.audio_start_ms, "audio_end_ms": vad.audio_end_ms}
            )
        await self._commit(item_id)
        # One response at a time writes to the conversation (reference §2.6): a turn that ends
        # while one is still running (interrupt_response false) does not start a second.
        if detection.get("create_response", True) and self.active is None and not self.transcription:
            await self.start_response({})

    async def _speech_started(self, vad: VadEvent, detection: dict[str, Any]) -> None:
        self.pending_user_item = new_id("item_")
        started = {"type": "input_audio_buffer.speech_started", "audio_start_ms": vad.audio_start_ms}
        await self.emit({**started, "item_id": self.pending_user_item})
        if self.active is not None and detection.get("interrupt_response", True):
            await self.cancel_active("turn_detected")

    def _buffer_audio(self, audio: bytes) -> None:
        self.buffer.append(audio)
        self.buffered_bytes += len(audio)

    def _take_buffer(self) -> bytes:
        """The input buffer's audio, leaving it empty (a commit or a clear)."""
        audio = b"".join(self.buffer)
        self.buffer, self.buffered_bytes = [], 0
        return audio

    def buffered_ms(self) -> float:
        return self.buffered_bytes / bytes_per_ms(input_encoding(self.session))

    async def _on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        if self.buffered_ms() < 100:
            raise self._fail(
                event,
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at "
                f"least 100ms of audio, but buffer only has {self.buffered_ms():.2f}ms of audio.",
            )
        await self._commit(None)

    async def _commit(self, item_id: str | None) -> None:
        item_id = item_id or new_id("item_")
        previous = self.conversation.last_id
        audio = self._take_buffer()
        if self.vad is not None:
            self.vad.reset()
        await self.emit(
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous,
                "item_id": item_id,
            }
        )
        item = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        audio_ms = len(audio) / bytes_per_ms(input_encoding(self.session))
        if self.transcription:  # no conversation: the utterance only gets transcribed
            self._spawn(self._transcribe_later(item, audio_ms))
            return
        await self._add_item(item, None, audio=audio)
        transcription = self.session["audio"]["input"].get("transcription")
        if transcription:
            await self._transcribe(item, audio_ms)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.streaming.add(task)  # owned: close() cancels what is still running
        task.add_done_callback(self.streaming.discard)

    async def _transcribe_later(self, item: dict[str, Any], audio_ms: float) -> None:
        """A transcription session's utterance, transcribed asynchronously as the API does: the
        next utterances go on meanwhile, and a long one may finish after a short one behind it."""
        base = self.config.timing.transcription_ms
        await asyncio.sleep(base * (1 + audio_ms / TRANSCRIPTION_MS_PER_BASE) / 1000)
        await self._transcribe(item, audio_ms)

    async def _transcribe(self, item: dict[str, Any], audio_ms: float) -> None:
        if self.script.transcription_fails():
            error = {
                "type": "transcription_error",
                "code": "audio_unintelligible",
                "message": "The audio could not be transcribed.",
                "param": None,
            }
            await self.emit(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": item["id"],
                    "content_index": 0,
                    "error": error,
                }
            )
            return
        text = self.script.next_transcript() or self.config.transcript_text or "Hello there."
        ids = {"item_id": item["id"], "content_index": 0}
        logprobs = "item.input_audio_transcription.logprobs" in (self.session.get("include") or [])
        pieces = words(text)  # " Hello", ",": the live transcriber's pieces (recordings)
        for piece in pieces:
            delta = {"type": "conversation.item.input_audio_transcription.delta", **ids, "delta": piece}
            if logprobs:
                delta["logprobs"] = _logprobs([piece])
            await self.emit({**delta, "obfuscation": obfuscation()})
        item["content"][0]["transcript"] = text
        completed = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item["id"],
            "content_index": 0,
            "transcript": text,
            "usage": {"type": "duration", "seconds": math.ceil(audio_ms / 1000)},
        }
        if logprobs:
            completed["logprobs"] = _logprobs(pieces)
        await self.emit(completed)

    async def _on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self._take_buffer()
        if self.vad is not None:
            self.vad.reset()
        await self.emit({"type": "input_audio_buffer.cleared"})

    # ------------------------------------------------------------------ conversation
    async def _on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = dict(event["item"])
        previous = event.get("previous_item_id")
        if previous not in (None, "root") and self.conversation.find(previous) is None:
            raise self._fail(
                event,
                "invalid_value",
                f"Invalid 'previous_item_id': no item with id '{previous}' exists in the conversation.",
                "previous_item_id",
            )
        if item.get("id") and self.conversation.find(item["id"]) is not None:
            raise self._fail(
                event, "invalid_value", f"Item with id '{item['id']}' already exists.", "item.id"
            )
        item.setdefault("id", new_id("item_"))
        if item.get("type") != "function_call_output":  # the API echoes outputs without a status
            item.setdefault("status", "completed")
        item.pop("object", None)
        await self._add_item(item, previous)

    async def _add_item(self, item: dict[str, Any], previous: str | None, audio: bytes = b"") -> None:
        before = self.conversation.insert(item, previous)
        if audio:
            self._keep_audio(item["id"], audio)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self.emit({"type": kind, "previous_item_id": before, "item": item})

    def _item_or_fail(self, event: dict[str, Any]) -> dict[str, Any]:
        item = self.conversation.find(event["item_id"])
        if item is None:
            raise self._fail(
                event, "item_not_found", f"Item with id '{event['item_id']}' not found.", "item_id"
            )
        return item

    def _keep_audio(self, item_id: str, audio: bytes) -> None:
        self.input_audio[item_id] = audio
        self.input_audio_bytes += len(audio)
        while self.input_audio_bytes > _KEPT_INPUT_AUDIO_BYTES and len(self.input_audio) > 1:
            oldest = next(iter(self.input_audio))
            self.input_audio_bytes -= len(self.input_audio.pop(oldest))

    async def _on_conversation_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self._item_or_fail(event)
        audio = self.input_audio.get(item["id"])
        if audio is not None and item.get("content"):
            content = [dict(part) for part in item["content"]]
            content[0]["audio"] = pybase64.b64encode_as_string(audio)
            item = {**item, "content": content}
        await self.emit({"type": "conversation.item.retrieved", "item": item})

    async def _on_conversation_item_delete(self, event: dict[str, Any]) -> None:
        self._item_or_fail(event)
        self.conversation.delete(event["item_id"])
        self.input_audio_bytes -= len(self.input_audio.pop(event["item_id"], b""))
        await self.emit({"type": "conversation.item.deleted", "item_id": event["item_id"]})

    async def _on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item = self._item_or_fail(event)
        content = item.get("content") or [{}]
        if item.get("role") != "assistant" or content[0].get("type") != "output_audio":
            raise self._fail(
                event,
                "invalid_value",
                "Only assistant messages with audio can be truncated.",
                "item_id",
            )
        length = int(item.get("_audio_ms", 0))
        if event["audio_end_ms"] > length:
            raise self._fail(
                event,
                "invalid_value",
                f"Audio content of {length}ms is already shorter than {event['audio_end_ms']}ms",
                "audio_end_ms",
            )
        content[0]["transcript"] = ""
        item["_audio_ms"] = event["audio_end_ms"]
        await self.emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item["id"],
                "content_index": event["content_index"],
                "audio_end_ms": event["audio_end_ms"],
            }
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config": self.session,
            "conversation": [public_item(i) for i in self.conversation.items],
            "received_types": list(self.received),
        }


def _logprobs(pieces: list[str]) -> list[dict[str, Any]]:
    """The shape the API gives with ``include: ["item.input_audio_transcription.logprobs"]``."""
    return [{"token": p, "logprob": -0.01, "bytes": list(p.encode())} for p in pieces]
