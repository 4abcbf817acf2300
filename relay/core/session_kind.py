"""What a session of one kind accepts: realtime sessions converse, transcription sessions only
transcribe. The kind is fixed when the app connects (``?intent=``), so an event meant for the
other kind is answered by the relay, with the API's error and a hint naming the URL to use,
instead of costing the app a round trip and, on some providers, the connection.
"""

from __future__ import annotations

from typing import Any

from relay.core.errors import InvalidEvent
from relay.core.protocol import TRANSCRIPTION_CLIENT_EVENT_TYPES

_TRANSCRIPTION_TYPES = frozenset(TRANSCRIPTION_CLIENT_EVENT_TYPES)
_HINT_TO_TRANSCRIPTION = (
    "Hint: this session was opened as a realtime session; for transcription connect with "
    "?intent=transcription (and no model), then send this session.update."
)
_HINT_TO_REALTIME = (
    "Hint: this session was opened with ?intent=transcription; for a conversation connect with "
    "?model=<model> (or ?intent=realtime) instead."
)


def check_session_kind(event: dict[str, Any], kind: str) -> None:
    """Raise the API's error for an event that the session of ``kind`` does not accept."""
    event_type = event.get("type")
    event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
    if event_type == "session.update":
        session = event.get("session")
        wanted = session.get("type", "realtime") if isinstance(session, dict) else kind
        if wanted != kind and isinstance(wanted, str):
            hint = _HINT_TO_TRANSCRIPTION if wanted == "transcription" else _HINT_TO_REALTIME
            message = f"Passing a {wanted} session update event to a {kind} session is not allowed. {hint}"
            raise InvalidEvent("invalid_parameter", message, "session.type", event_id)
    elif kind == "transcription" and event_type not in _TRANSCRIPTION_TYPES:
        supported = ", ".join(f"'{t}'" for t in TRANSCRIPTION_CLIENT_EVENT_TYPES[:-1])
        supported += f", and '{TRANSCRIPTION_CLIENT_EVENT_TYPES[-1]}'"
        message = (
            f"Invalid value: '{event_type}'. Supported values are: {supported}. "
            "Hint: a transcription session transcribes input audio and never responds or keeps "
            "a conversation; for that, connect with ?model=<model> (or ?intent=realtime)."
        )
        raise InvalidEvent("invalid_value", message, "type", event_id)
