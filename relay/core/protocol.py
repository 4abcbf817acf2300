"""Names the Realtime API protocol is made of: event types, interfaces, audio formats.

Sources: reference sections 2-3 (the live GA accepted-type list, the SDK server event unions).
Label sets of metrics are drawn from these lists, so they stay bounded.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Interface(StrEnum):
    """Which shape of the protocol a peer speaks."""

    GA = "ga"
    BETA = "beta"


# The order is the API's own, as it lists them in the `invalid_value` error for an unknown type.
GA_CLIENT_EVENT_TYPES: Final[tuple[str, ...]] = (
    "session.update",
    "session.close",
    "input_audio_buffer.append",
    "session.input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)

# What a transcription session (?intent=transcription) takes: its configuration and the input
# audio buffer; it keeps no conversation and never responds. (The reference lists the realtime
# session's types; a transcription session refusing the rest is this project's reading of the
# API's transcription guide: no response, item or conversation events are part of it.)
TRANSCRIPTION_CLIENT_EVENT_TYPES: Final[tuple[str, ...]] = (
    "session.update",
    "session.close",
    "input_audio_buffer.append",
    "session.input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)

BETA_CLIENT_EVENT_TYPES: Final[tuple[str, ...]] = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)

GA_SERVER_EVENT_TYPES: Final[tuple[str, ...]] = (
    "error",
    "session.created",
    "session.updated",
    "conversation.created",
    "conversation.item.created",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.retrieved",
    "conversation.item.truncated",
    "conversation.item.deleted",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "conversation.item.input_audio_transcription.segment",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.timeout_triggered",
    "input_audio_buffer.dtmf_event_received",
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
    "response.created",
    "response.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.mcp_call_arguments.delta",
    "response.mcp_call_arguments.done",
    "response.mcp_call.in_progress",
    "response.mcp_call.completed",
    "response.mcp_call.failed",
    "mcp_list_tools.in_progress",
    "mcp_list_tools.completed",
    "mcp_list_tools.failed",
    "rate_limits.updated",
)

BETA_SERVER_EVENT_TYPES: Final[tuple[str, ...]] = (
    "error",
    "session.created",
    "session.updated",
    "transcription_session.created",
    "transcription_session.updated",
    "conversation.created",
    "conversation.item.created",
    "conversation.item.retrieved",
    "conversation.item.truncated",
    "conversation.item.deleted",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
    "response.created",
    "response.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.text.delta",
    "response.text.done",
    "response.audio_transcript.delta",
    "response.audio_transcript.done",
    "response.audio.delta",
    "response.audio.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "rate_limits.updated",
)

# The events that stream an answer beside its audio deltas: text deltas and the ends of its parts.
# The relay's delta lane takes them (relay.io.lanes; tests/io/test_lanes.py holds them to types
# only the state's mirror reads).
STREAM_EVENT_TYPES: Final[tuple[str, ...]] = (
    "response.output_audio_transcript.delta",
    "response.output_text.delta",
    "conversation.item.input_audio_transcription.delta",
    "response.function_call_arguments.delta",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.output_text.done",
    "response.function_call_arguments.done",
    "rate_limits.updated",
)

# Every event type a metric label may carry; anything else is reported as "other".
KNOWN_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    GA_CLIENT_EVENT_TYPES + BETA_CLIENT_EVENT_TYPES + GA_SERVER_EVENT_TYPES + BETA_SERVER_EVENT_TYPES
)


def event_type_label(event_type: object) -> str:
    """A bounded metric label for an event type."""
    return event_type if isinstance(event_type, str) and event_type in KNOWN_EVENT_TYPES else "other"


# Audio: bytes per millisecond of each input/output format (reference section 5).
PCM16_BYTES_PER_MS: Final = 48  # 24 kHz x 2 bytes
G711_BYTES_PER_MS: Final = 8  # 8 kHz x 1 byte
GA_FORMAT_BYTES_PER_MS: Final[dict[str, int]] = {
    "audio/pcm": PCM16_BYTES_PER_MS,
    "audio/pcmu": G711_BYTES_PER_MS,
    "audio/pcma": G711_BYTES_PER_MS,
}
BETA_FORMAT_BYTES_PER_MS: Final[dict[str, int]] = {
    "pcm16": PCM16_BYTES_PER_MS,
    "g711_ulaw": G711_BYTES_PER_MS,
    "g711_alaw": G711_BYTES_PER_MS,
}
MIN_COMMIT_MS: Final = 100
MAX_APPEND_BYTES: Final = 15 * 1024 * 1024
MAX_ID_LENGTH: Final = 32
MAX_EVENT_ID_LENGTH: Final = 512

DEFAULT_MODEL: Final = "gpt-realtime"
BETA_HEADER_VALUE: Final = "realtime=v1"
BETA_SUBPROTOCOL: Final = "openai-beta.realtime-v1"
TOKEN_SUBPROTOCOL_PREFIX: Final = "openai-insecure-api-key."
REALTIME_SUBPROTOCOL: Final = "realtime"

BETA_DISABLED_MESSAGE: Final = (
    "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
)
