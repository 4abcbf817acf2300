"""The client-to-upstream checks, in the order the API would apply them.

Parse once, validate against the interface the client speaks, check audio, apply the operator's
policy, and report the frames to forward. A frame the relay did not change is forwarded as the
exact bytes the client sent.
"""

from __future__ import annotations

from typing import Any

from relay.core.audio import AudioAccount, InputAudioCheck, encoding_of
from relay.core.beta_translator import BetaTranslator
from relay.core.policy import Policy
from relay.core.protocol import Interface
from relay.core.validation import Validator, parse_client_frame
from relay.io.frames import dumps, event_type_of
from relay.settings import Settings

Checked = list[tuple[bytes, str, dict[str, Any] | None]]

_APPEND = "input_audio_buffer.append"


class ClientEventChecker:
    """Validation, audio accounting and policy for one session's client events."""

    def __init__(
        self, settings: Settings, interface: Interface, translator: BetaTranslator | None = None
    ) -> None:
        self.enabled = settings.validate_events or translator is not None
        self.translator = translator
        self.validator = Validator(Interface.BETA if translator is not None else interface)
        self.policy = Policy.from_settings(settings)
        self.account = AudioAccount()
        self.input_audio = InputAudioCheck()  # the API's default input format is PCM16
        self.audio = b""  # the last append's audio, decoded by the checks (kept for a replay)
        self.turn_detection_on = True  # the API's default session has server VAD

    def check(self, data: bytes) -> Checked:
        """The frames to forward for one client frame; raises InvalidEvent to reject it."""
        if not self.enabled:
            peeked_type, peeked = event_type_of(data)
            return [(data, peeked_type, peeked)]
        event = parse_client_frame(data)
        if event["type"] == _APPEND and Validator.is_plain_append(event):
            # The 20 ms append is ~98% of client frames: its keys were just checked, which is
            # all the schema would do, so it goes straight to the audio checks.
            self.audio = self.input_audio.check(event["audio"], event.get("event_id"))
            self.account.bytes += len(self.audio)
            return [(data, _APPEND, event)]
        self.validator.check(event)
        if self.translator is not None and event["type"] != _APPEND:
            return [self._one(dumps(ga), ga) for ga in self.translator.client_to_ga(event)]
        return [self._one(data, event)]

    def _one(self, data: bytes, event: dict[str, Any]) -> tuple[bytes, str, dict[str, Any] | None]:
        event_type = str(event["type"])
        if event_type == _APPEND:
            self.audio = self.input_audio.check(event["audio"], _eid(event))
            self.account.appended(len(self.audio))
            return (data, event_type, event)
        self._account_for(event_type, event)
        if self.policy.apply(event):
            data = dumps(event)
        return (data, event_type, event)

    def _account_for(self, event_type: str, event: dict[str, Any]) -> None:
        if event_type == "input_audio_buffer.commit":
            self.account.check_commit(self.turn_detection_on, _eid(event))
            self.input_audio.restart()
        elif event_type == "input_audio_buffer.clear":
            self.account.cleared()
            self.input_audio.restart()

    def on_server_event(self, event_type: str, event: dict[str, Any]) -> None:
        """Keep the input format and buffer count in step with what the server confirmed."""
        if event_type in ("session.created", "session.updated"):
            session = event.get("session")
            if isinstance(session, dict):
                encoding = encoding_of(session)
                self.input_audio.set_encoding(encoding)
                self.account.set_encoding(encoding)
                self.turn_detection_on = _turn_detection(session) is not None
        elif event_type == "input_audio_buffer.committed":
            self.account.committed()
        elif event_type == "input_audio_buffer.cleared":
            self.account.cleared()


def _eid(event: dict[str, Any]) -> str | None:
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def _turn_detection(session: dict[str, Any]) -> Any:
    audio = session.get("audio")
    if isinstance(audio, dict) and isinstance(audio.get("input"), dict):
        return audio["input"].get("turn_detection")
    return session.get("turn_detection")  # beta shape
