"""Beta clients on a GA upstream: one declarative table, applied in both directions.

The beta interface (``OpenAI-Beta: realtime=v1``) is switched off on api.openai.com; apps written
for it keep working through the relay, which speaks beta to them and GA upstream. Session and
state stay in GA terms (the supervisor never sees beta); translation lives at the client edge.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from relay.core.errors import InvalidEvent

Event = dict[str, Any]
Convert = Callable[[Any], Any]

# --- value maps -------------------------------------------------------------------------------
FORMATS: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}


def format_to_ga(value: Any) -> Any:
    return copy.deepcopy(FORMATS.get(value, value))


def format_to_beta(value: Any) -> Any:
    kind = value.get("type") if isinstance(value, dict) else None
    return next((beta for beta, ga in FORMATS.items() if ga["type"] == kind), value)


def modalities_to_ga(value: Any) -> Any:
    """Beta ["audio", "text"] (audio with its transcript) is GA ["audio"]; GA allows one modality."""
    return ["audio"] if isinstance(value, list) and "audio" in value else value


def modalities_to_beta(value: Any) -> Any:
    return ["audio", "text"] if isinstance(value, list) and "audio" in value else value


_SERVER_VAD_KEYS = {
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "create_response",
    "interrupt_response",
    "idle_timeout_ms",
}
_SEMANTIC_VAD_KEYS = {"type", "eagerness", "create_response", "interrupt_response"}


def turn_detection_to_ga(value: Any) -> Any:
    """Beta allowed one loose object for both detectors; GA keeps only each one's own keys."""
    if not isinstance(value, dict):
        return value
    kind = value.get("type") or "server_vad"
    keys = _SEMANTIC_VAD_KEYS if kind == "semantic_vad" else _SERVER_VAD_KEYS
    return {k: v for k, v in {**value, "type": kind}.items() if k in keys and v is not None}


def same(value: Any) -> Any:
    return copy.deepcopy(value)


# --- the table: beta session field -> (GA path, to GA, to beta) --------------------------------
SESSION_FIELDS: dict[str, tuple[tuple[str, ...], Convert, Convert]] = {
    "model": (("model",), same, same),
    "instructions": (("instructions",), same, same),
    "modalities": (("output_modalities",), modalities_to_ga, modalities_to_beta),
    "voice": (("audio", "output", "voice"), same, same),
    "speed": (("audio", "output", "speed"), same, same),
    "input_audio_format": (("audio", "input", "format"), format_to_ga, format_to_beta),
    "output_audio_format": (("audio", "output", "format"), format_to_ga, format_to_beta),
    "input_audio_transcription": (("audio", "input", "transcription"), same, same),
    "input_audio_noise_reduction": (("audio", "input", "noise_reduction"), same, same),
    "turn_detection": (("audio", "input", "turn_detection"), turn_detection_to_ga, same),
    "tools": (("tools",), same, same),
    "tool_choice": (("tool_choice",), same, same),
    "tracing": (("tracing",), same, same),
    "include": (("include",), same, same),
    "max_response_output_tokens": (("max_output_tokens",), same, same),
}
# Beta fields with no GA meaning: dropped with one warning (the app's behaviour does not depend
# on them being honoured exactly: sampling temperature, a client secret's expiry).
DROPPED_SESSION_FIELDS = frozenset({"temperature", "client_secret"})

RESPONSE_FIELDS: dict[str, tuple[tuple[str, ...], Convert, Convert]] = {
    "modalities": (("output_modalities",), modalities_to_ga, modalities_to_beta),
    "instructions": (("instructions",), same, same),
    "voice": (("audio", "output", "voice"), same, same),
    "output_audio_format": (("audio", "output", "format"), format_to_ga, format_to_beta),
    "tools": (("tools",), same, same),
    "tool_choice": (("tool_choice",), same, same),
    "max_response_output_tokens": (("max_output_tokens",), same, same),
    "conversation": (("conversation",), same, same),
    "metadata": (("metadata",), same, same),
}
DROPPED_RESPONSE_FIELDS = frozenset({"temperature"})

# GA server event type -> beta type (None: GA-only, not shown to beta clients).
SERVER_RENAMES: dict[str, str | None] = {
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "conversation.item.added": "conversation.item.created",
    # Beta has no item "done"; its final content reaches beta apps in response.output_item.done.
    "conversation.item.done": None,
}
CONTENT_TO_BETA = {"output_text": "text", "output_audio": "audio"}
CONTENT_TO_GA = {"text": "output_text", "audio": "output_audio"}
# Client event types that map one to one (the shapes match; items are converted below).
PASS_THROUGH_CLIENT = frozenset(
    {
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.truncate",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "response.cancel",
    }
)
_FAST_RENAMES = tuple(
    (f'{{"type":"{ga}"'.encode(), f'{{"type":"{beta}"'.encode())
    for ga, beta in SERVER_RENAMES.items()
    if beta is not None and ga.endswith(".delta")
)


def _get(obj: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    current: Any = obj
    for key in path:
        if not isinstance(current, Mapping) or key not in current:
            return False, None
        current = current[key]
    return True, current


def _put(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = value


def fields_to_ga(
    beta: Mapping[str, Any],
    table: Mapping[str, tuple[tuple[str, ...], Convert, Convert]],
    dropped: frozenset[str],
    where: str,
    found_dropped: list[str],
) -> dict[str, Any]:
    ga: dict[str, Any] = {}
    for name, value in beta.items():
        if name in dropped:
            found_dropped.append(f"{where}.{name}")
        elif name in table:
            path, to_ga, _ = table[name]
            _put(ga, path, to_ga(value))
        else:
            raise InvalidEvent(
                "unknown_parameter", f"Unknown parameter: '{where}.{name}'.", f"{where}.{name}"
            )
    return ga


def fields_to_beta(
    ga: Mapping[str, Any], table: Mapping[str, tuple[tuple[str, ...], Convert, Convert]]
) -> dict[str, Any]:
    beta: dict[str, Any] = {}
    for name, (path, _, to_beta) in table.items():
        present, value = _get(ga, path)
        if present:
            beta[name] = to_beta(value)
    return beta


def item_to_ga(item: Mapping[str, Any]) -> dict[str, Any]:
    converted = copy.deepcopy(dict(item))
    for part in converted.get("content") or []:
        if part.get("type") == "item_reference":
            raise InvalidEvent(
                "invalid_value",
                "Item references inside message content are not supported on this session.",
                "item.content",
            )
        if converted.get("role") == "assistant" and part.get("type") in CONTENT_TO_GA:
            part["type"] = CONTENT_TO_GA[part["type"]]
    return converted


def item_to_beta(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    converted = dict(item)
    content = converted.get("content")
    if isinstance(content, list):
        converted["content"] = [
            {**part, "type": CONTENT_TO_BETA.get(str(part.get("type")), part.get("type"))}
            if isinstance(part, dict)
            else part
            for part in content
        ]
    return converted


# GA param prefixes -> beta spelling, for error messages that name a translated field.
PARAM_TO_BETA = sorted(
    ((".".join(("session", *path)), f"session.{name}") for name, (path, _, _) in SESSION_FIELDS.items()),
    key=lambda pair: -len(pair[0]),
)


def param_to_beta(param: str) -> str:
    for ga, beta in PARAM_TO_BETA:
        if param == ga or param.startswith(ga + ".") or param.startswith(ga + "["):
            return beta + param[len(ga) :]
    return param
