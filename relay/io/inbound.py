"""The client-to-upstream checks, in the order the API would apply them.

Bound the frame (size per event type and structure, before any parse: ``relay.core.bounds``),
parse once, refuse duplicate keys, validate against the interface the client speaks, check
audio, apply the operator's policy, and report the frames to forward. A frame the relay did not
change is forwarded as the exact bytes the client sent.
"""

from __future__ import annotations

from typing import Any

from relay.core import bounds
from relay.core.audio import AudioAccount, InputAudioCheck, encoding_of
from relay.core.beta_translator import BetaTranslator
from relay.core.calls import CallFormats, check_response_format, pin_call_formats
from relay.core.errors import event_too_large
from relay.core.policy import Policy
from relay.core.protocol import Interface
from relay.core.session_kind import check_session_kind
from relay.core.validation import Validator, parse_client_frame
from relay.io.frames import dumps, peek_type
from relay.settings import Settings

Checked = list[tuple[bytes, str, dict[str, Any] | None]]

_APPEND = "input_audio_buffer.append"
_APPENDS = frozenset({_APPEND, "session.input_audio_buffer.append"})
_SMALL_EVENT_BYTES = bounds.SMALL_EVENT_BYTES


class ClientEventChecker:
    """Validation, audio accounting and policy for one session's client events."""

    def __init__(
        self,
        settings: Settings,
        interface: Interface,
        translator: BetaTranslator | None = None,
        kind: str = "realtime",
        call: CallFormats | None = None,
    ) -> None:
        self.kind = kind  # "transcription" for ?intent=transcription: no responses, no items
        self.call = call  # a phone call's formats: G.711 pinned on every update (F4)
        self.fill_call_formats = settings.calls_fill_formats
        self.enabled = settings.validate_events or translator is not None
        self.max_bytes = settings.max_message_bytes
        self._fast_path_bytes = _SMALL_EVENT_BYTES if self.enabled else -1  # -1: never
        self.translator = translator
        self.validator = Validator(Interface.BETA if translator is not None else interface)
        self.policy = Policy.from_settings(settings)
        self.account = AudioAccount()
        self.input_audio = InputAudioCheck()  # the API's default input format is PCM16
        self.audio = b""  # the last checked append's audio, for forward_upstream's replay copy
        self.turn_detection_on = True  # the API's default session has server VAD

    def take_append(self, data: bytes) -> bytes | None:
        """The audio of a plain 20 ms append, checked in one step without a parse (~98% of
        client frames); None for any other frame, which :meth:`check` then takes, unchanged."""
        if len(data) > self._fast_path_bytes:
            return None
        audio = self.input_audio.take_plain(data)
        if audio is not None:
            self.account.bytes += len(audio)
        return audio

    def check(self, data: bytes) -> Checked:
        """The frames to forward for one client frame; raises InvalidEvent to reject it."""
        # Every event type may be 64 KiB (SMALL_EVENT_BYTES): only larger frames need their type
        # and structure looked at before the parse, so the 20 ms append pays one comparison.
        if len(data) > self._fast_path_bytes:
            return self._check_large_or_unvalidated(data)
        event = parse_client_frame(data)
        if event["type"] == _APPEND and bounds.plain_append(data, event):
            # The 20 ms append is ~98% of client frames: its keys were just checked, which is
            # all the schema would do, and its length shows none came twice, so it goes
            # straight to the audio checks.
            self.audio = self.input_audio.check(event["audio"], event.get("event_id"))
            self.account.bytes += len(self.audio)
            return [(data, _APPEND, event)]
        return self._checked(data, event, False, None)

    def _check_large_or_unvalidated(self, data: bytes) -> Checked:
        large = len(data) > _SMALL_EVENT_BYTES
        peeked = self._check_large(data) if large else None
        if not self.enabled:
            return self._unvalidated(data, large, peeked)
        event = parse_client_frame(data)
        if event["type"] == _APPEND and bounds.plain_append(data, event):
            self.audio = self.input_audio.check(event["audio"], event.get("event_id"))
            self.account.bytes += len(self.audio)
            return [(data, _APPEND, event)]
        return self._checked(data, event, large, peeked)

    def _checked(self, data: bytes, event: dict[str, Any], large: bool, peeked: str | None) -> Checked:
        """Every event but the plain append: bounded, validated, translated, policed."""
        self._check_parsed(data, event, large, peeked)
        self.validator.check(event)
        if self.translator is not None and event["type"] != _APPEND:
            translated = self.translator.client_to_ga(event)
            for ga in translated:
                check_session_kind(ga, self.kind)
            return [self._one(dumps(ga), ga) for ga in translated]
        check_session_kind(event, self.kind)
        return [self._one(data, event)]

    def _check_large(self, data: bytes) -> str | None:
        """Size for the event type in the frame's first bytes, then structure: before any parse."""
        peeked = peek_type(data)
        bounds.check_size(data, peeked, self._limit(peeked))
        if len(data) >= bounds.STRUCTURE_CHECK_BYTES:
            bounds.check_values(data)
        return peeked

    def _check_parsed(self, data: bytes, event: dict[str, Any], large: bool, peeked: str | None) -> None:
        event_type = event["type"]
        if large and peeked != event_type and isinstance(event_type, str):
            # The type was not first (or not where peek_type looks): its limit applies now.
            limit = self._limit(event_type)
            if len(data) > limit:
                raise event_too_large(event_type, len(data), limit, _eid(event))
        bounds.check_parsed(data, event)

    def _limit(self, event_type: str | None) -> int:
        return bounds.size_limit(event_type, self.max_bytes, validating=self.enabled)

    def _unvalidated(self, data: bytes, large: bool, peeked: str | None) -> Checked:
        """Schema validation is off: appends pass untouched; other events (rare) are parsed and
        bounded, so that the operator's policy still applies to them."""
        if not large:
            peeked = peek_type(data)
        # An append passes unparsed, unless a second "type" could make it another event for the
        # API (the policy would not have seen it): then it is parsed, and a duplicate refused.
        if peeked in _APPENDS and (not self.policy.active or data.find(b'"type"', 7) < 0):
            return [(data, str(peeked), None)]
        event = parse_client_frame(data)
        self._check_parsed(data, event, large, peeked)
        event_type = event["type"] if isinstance(event["type"], str) else "invalid"
        if event_type in _APPENDS:  # an append whose type is not first: untouched as well
            return [(data, event_type, event)]
        pinned = self.call is not None and self._pin_call(event_type, event)
        if self.policy.apply(event) or pinned:
            data = dumps(event)
        return [(data, event_type, event)]

    def _one(self, data: bytes, event: dict[str, Any]) -> tuple[bytes, str, dict[str, Any] | None]:
        event_type = str(event["type"])
        if event_type == _APPEND:
            self.audio = self.input_audio.check(event["audio"], _eid(event))
            self.account.appended(len(self.audio))
            return (data, event_type, event)
        self._account_for(event_type, event)
        pinned = self.call is not None and self._pin_call(event_type, event)
        if self.policy.apply(event) or pinned:
            data = dumps(event)
        return (data, event_type, event)

    def _pin_call(self, event_type: str, event: dict[str, Any]) -> bool:
        """On a call, keep its G.711 formats: fill them into an update that names none (the API
        once reset such a session to PCM: static on the line), refuse PCM with a hint."""
        assert self.call is not None
        if event_type == "session.update" and isinstance(session := event.get("session"), dict):
            return pin_call_formats(session, self.call, fill=self.fill_call_formats, event_id=_eid(event))
        if event_type == "response.create":
            check_response_format(event.get("response"), self.call, event_id=_eid(event))
        return False

    def _account_for(self, event_type: str, event: dict[str, Any]) -> None:
        if event_type == "input_audio_buffer.commit":
            self.account.check_commit(self.turn_detection_on, _eid(event))
            self.account.committed()
            self.input_audio.restart()
        elif event_type == "input_audio_buffer.clear":
            self.account.cleared()
            self.input_audio.restart()

    def on_server_event(self, event_type: str, event: dict[str, Any]) -> None:
        """Keep the input format and turn detection in step with what the server confirmed. (Not
        the buffer count: see ``AudioAccount``.)"""
        if event_type in ("session.created", "session.updated"):
            session = event.get("session")
            if isinstance(session, dict):
                encoding = encoding_of(session)
                self.input_audio.set_encoding(encoding)
                self.account.set_encoding(encoding)
                self.turn_detection_on = _turn_detection(session) is not None


def _eid(event: dict[str, Any]) -> str | None:
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def _turn_detection(session: dict[str, Any]) -> Any:
    audio = session.get("audio")
    if isinstance(audio, dict) and isinstance(audio.get("input"), dict):
        return audio["input"].get("turn_detection")
    return session.get("turn_detection")  # beta shape
