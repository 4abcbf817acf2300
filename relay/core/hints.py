"""Hints appended to error messages for the mistakes people actually make (F4, F7, F8).

The API's own sentence stays first and unchanged; the hint says how to fix it.
"""

from __future__ import annotations

import difflib
from typing import Any

from relay.core.errors import InvalidEvent

# Beta session fields and their GA spelling (reference §2.1-2.2).
BETA_FIELD_HINTS = {
    "modalities": "in GA this is 'session.output_modalities' (['audio'] or ['text'])",
    "input_audio_format": (
        "in GA the input format is 'session.audio.input.format', an object such as "
        '{"type": "audio/pcm", "rate": 24000} (pcm16), {"type": "audio/pcmu"} (g711_ulaw) or '
        '{"type": "audio/pcma"} (g711_alaw)'
    ),
    "output_audio_format": (
        "in GA the output format is 'session.audio.output.format', an object such as "
        '{"type": "audio/pcm", "rate": 24000}'
    ),
    "turn_detection": "in GA this is 'session.audio.input.turn_detection' (JSON null disables it)",
    "voice": "in GA this is 'session.audio.output.voice'",
    "input_audio_transcription": "in GA this is 'session.audio.input.transcription'",
    "input_audio_noise_reduction": "in GA this is 'session.audio.input.noise_reduction'",
    "max_response_output_tokens": "in GA this is 'session.max_output_tokens'",
    "temperature": "'temperature' does not exist in the GA interface; remove it",
}
# GA fields sent on a beta connection (reference §2.2: "Unknown parameter: 'session.type'").
GA_FIELD_HINTS = {
    "type": "drop it there",
    "output_modalities": "beta's is 'modalities' (['text'] or ['audio', 'text'])",
    "audio": (
        "beta's are 'input_audio_format', 'output_audio_format', 'voice', 'turn_detection' and "
        "'input_audio_transcription'"
    ),
    "max_output_tokens": "beta's is 'max_response_output_tokens'",
}
_KNOWN_SESSION_FIELDS = (
    "type",
    "output_modalities",
    "model",
    "instructions",
    "audio",
    "include",
    "tracing",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "max_output_tokens",
    "truncation",
    "prompt",
)
_FORMAT_STRINGS = {
    "pcm16": '{"type": "audio/pcm", "rate": 24000}',
    "g711_ulaw": '{"type": "audio/pcmu"}',
    "g711_alaw": '{"type": "audio/pcma"}',
}


def hint_for(event: dict[str, Any], error: InvalidEvent) -> str | None:
    param = error.param or ""
    leaf = param.rsplit(".", 1)[-1]
    value = _value_at(event, param)
    found: list[str] = []
    for rule in (
        _wrong_level,
        _session_id_elsewhere,
        _null_string,
        _session_id,
        _beta_field,
        _ga_field,
        _format_string,
        _tool_type,
        _missing_session_type,
        _modalities,
        _did_you_mean,
    ):
        hint = rule(event, error, param, leaf, value)
        if hint and hint not in found:
            found.append(hint)
    return " ".join(found[:3]) or None


def _modalities(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    """The other interface's combination: beta answered ['audio', 'text'], GA ['audio']."""
    if error.code != "invalid_value" or leaf not in ("output_modalities", "modalities"):
        return None
    if leaf == "output_modalities":
        return "['audio'] answers with audio and its transcript; ['audio', 'text'] was the beta spelling"
    return "beta answers with audio and its transcript as ['audio', 'text']; ['audio'] is the GA spelling"


def _session_id_elsewhere(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    """F7: the session id sent where the session object belongs, reported with another error."""
    session = event.get("session") if isinstance(event, dict) else None
    if param != "session" and isinstance(session, str):
        return _session_id(event, error, "session", "session", session)
    return None


def _value_at(event: dict[str, Any], path: str) -> Any:
    current: Any = event
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            index = int(part.strip("[]"))
            current = current[index] if isinstance(current, list) and index < len(current) else None
        else:
            current = current.get(part) if isinstance(current, dict) else None
    return current


def _null_string(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    if isinstance(value, str) and value.strip().lower() in ("none", "null", "nil", "undefined"):
        return f"'{param}' is the string {value!r}; to disable or clear it send JSON null (no quotes)."
    return None


def _session_id(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    if param == "session" and isinstance(value, str):
        return (
            "'session' must be an object with the fields to change (for example "
            '{"type": "realtime", "instructions": "..."}), not a session id.'
        )
    return None


def _wrong_level(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    if error.code != "unknown_parameter" or "." in param:
        return None
    if event.get("type") == "session.update" and (leaf in BETA_FIELD_HINTS or leaf in _KNOWN_SESSION_FIELDS):
        where = BETA_FIELD_HINTS.get(leaf, f"it belongs at 'session.{leaf}'")
        return f"session fields go inside the 'session' object; {where}."
    return None


def _beta_field(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    if error.code == "unknown_parameter" and param == f"session.{leaf}" and leaf in BETA_FIELD_HINTS:
        return f"this is a beta field: {BETA_FIELD_HINTS[leaf]}."
    return None


def _ga_field(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    """A GA field refused: the connection speaks beta (the client's OpenAI-Beta: realtime=v1
    header, or the relay's upstream is an Azure preview deployment)."""
    if error.code != "unknown_parameter" or param not in (f"session.{leaf}", f"response.{leaf}"):
        return None
    if leaf not in GA_FIELD_HINTS:
        return None
    return (
        f"'{leaf}' is a GA field, and this connection speaks the beta interface "
        f"('OpenAI-Beta: realtime=v1', or an Azure preview api-version): {GA_FIELD_HINTS[leaf]}."
    )


def _format_string(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    if leaf == "format" and isinstance(value, str):
        shape = _FORMAT_STRINGS.get(value, '{"type": "audio/pcm", "rate": 24000}')
        return f"GA audio formats are objects: use {shape}."
    if param.endswith("format.type") and isinstance(value, str) and value in _FORMAT_STRINGS:
        return f"'{value}' is the beta name; the GA format object is {_FORMAT_STRINGS[value]}."
    return None


def _tool_type(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    tools = param.startswith(("session.tools", "response.tools")) and param.endswith("type")
    if (
        tools
        and isinstance(value, str)
        and value in ("web_search", "file_search", "code_interpreter", "computer_use_preview")
    ):
        return (
            f"'{value}' tools exist in the Responses API, not in Realtime; only 'function' "
            "and 'mcp' tools are supported here."
        )
    return None


def _missing_session_type(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    if error.code == "missing_required_parameter" and param == "session.type":
        return (
            'a GA session.update must say which session it configures: add "type": "realtime" '
            '(or "transcription") inside "session".'
        )
    return None


def _did_you_mean(event: Any, error: InvalidEvent, param: str, leaf: str, value: Any) -> str | None:
    if error.code != "unknown_parameter":
        return None
    candidates = (
        *_KNOWN_SESSION_FIELDS,
        "input",
        "output",
        "format",
        "voice",
        "speed",
        "transcription",
        "noise_reduction",
        "turn_detection",
        "threshold",
        "prefix_padding_ms",
        "silence_duration_ms",
        "create_response",
        "interrupt_response",
        "idle_timeout_ms",
        "eagerness",
        "event_id",
        "item",
        "previous_item_id",
        "response",
        "metadata",
        "conversation",
    )
    close = difflib.get_close_matches(leaf, candidates, n=1, cutoff=0.75)
    return f"did you mean '{close[0]}'?" if close and close[0] != leaf else None
