"""Beta client events (OpenAI-Beta: realtime=v1), from the 2025-04 beta schema.

Beta sessions are flat (``modalities``, ``voice``, ``input_audio_format`` ...); conversation
items use ``text`` for assistant content. Shared pieces come from ``common``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter

from relay.core.schema.common import (
    CustomVoice,
    EventId,
    FunctionTool,
    ItemId,
    Metadata,
    NoiseReduction,
    Strict,
    ToolChoiceFunction,
    Voice,
    tag,
    tag_of,
)

BetaFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]


class BetaTranscription(Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class BetaTurnDetection(Strict):
    type: Literal["server_vad", "semantic_vad"] | None = None
    threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    idle_timeout_ms: int | None = None


class BetaTracing(Strict):
    workflow_name: str | None = None
    group_id: str | None = None
    metadata: dict[str, Any] | None = None


BetaToolChoice = Literal["none", "auto", "required"] | ToolChoiceFunction
MaxTokens = Annotated[int, Field(ge=1, le=4096)] | Literal["inf"]


class BetaSession(Strict):
    model: str | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    instructions: str | None = None
    voice: Voice | CustomVoice | str | None = None
    input_audio_format: BetaFormat | None = None
    output_audio_format: BetaFormat | None = None
    input_audio_transcription: BetaTranscription | None = None
    input_audio_noise_reduction: NoiseReduction | None = None
    turn_detection: BetaTurnDetection | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: BetaToolChoice | None = None
    temperature: Annotated[float, Field(ge=0.6, le=1.2)] | None = None
    max_response_output_tokens: MaxTokens | None = None
    speed: Annotated[float, Field(ge=0.25, le=1.5)] | None = None
    tracing: Literal["auto"] | BetaTracing | None = None
    include: list[str] | None = None
    client_secret: dict[str, Any] | None = None


class BetaTranscriptionSession(Strict):
    input_audio_format: BetaFormat | None = None
    input_audio_transcription: BetaTranscription | None = None
    turn_detection: BetaTurnDetection | None = None
    input_audio_noise_reduction: NoiseReduction | None = None
    include: list[str] | None = None
    client_secret: dict[str, Any] | None = None


class BetaContent(Strict):
    type: Literal["input_text", "input_audio", "item_reference", "text", "audio"]
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None
    id: str | None = None


class BetaItem(Strict):
    id: ItemId | None = None
    object: Literal["realtime.item"] | None = None
    type: Literal["message", "function_call", "function_call_output"] | None = None
    status: Literal["completed", "incomplete", "in_progress"] | None = None
    role: Literal["user", "assistant", "system"] | None = None
    content: list[BetaContent] | None = None
    call_id: ItemId | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


class BetaResponseParams(Strict):
    modalities: list[Literal["text", "audio"]] | None = None
    instructions: str | None = None
    voice: Voice | CustomVoice | str | None = None
    output_audio_format: BetaFormat | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: BetaToolChoice | None = None
    temperature: Annotated[float, Field(ge=0.6, le=1.2)] | None = None
    max_response_output_tokens: MaxTokens | None = None
    conversation: str | None = None
    metadata: Metadata | None = None
    input: list[BetaItem] | None = None


class _Event(Strict):
    event_id: EventId | None = None


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: BetaSession


class TranscriptionSessionUpdate(_Event):
    type: Literal["transcription_session.update"]
    session: BetaTranscriptionSession


class Append(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class Commit(_Event):
    type: Literal["input_audio_buffer.commit"]


class Clear(_Event):
    type: Literal["input_audio_buffer.clear"]


class OutputClear(_Event):
    type: Literal["output_audio_buffer.clear"]


class ItemCreate(_Event):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: BetaItem


class ItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: Annotated[int, Field(ge=0)]
    audio_end_ms: Annotated[int, Field(ge=0)]


class ItemId_(_Event):
    type: Literal["conversation.item.delete", "conversation.item.retrieve"]
    item_id: str


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: BetaResponseParams | None = None


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: str | None = None


EVENT_MODELS: dict[str, type[Strict]] = {
    "session.update": SessionUpdate,
    "transcription_session.update": TranscriptionSessionUpdate,
    "input_audio_buffer.append": Append,
    "input_audio_buffer.commit": Commit,
    "input_audio_buffer.clear": Clear,
    "output_audio_buffer.clear": OutputClear,
    "conversation.item.create": ItemCreate,
    "conversation.item.truncate": ItemTruncate,
    "conversation.item.delete": ItemId_,
    "conversation.item.retrieve": ItemId_,
    "response.create": ResponseCreate,
    "response.cancel": ResponseCancel,
}
ADAPTERS: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(m) for name, m in EVENT_MODELS.items()}
_unused = (Discriminator, Tag, tag, tag_of)
