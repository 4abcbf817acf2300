"""GA client events as strict pydantic models, from the OpenAPI schema (RealtimeClientEvent*).

Every object forbids unknown keys; limits (ids <= 32, event_id <= 512, rate 24000, speed
0.25-1.5, idle_timeout_ms 5000-30000, max_output_tokens 1-4096 or "inf", metadata 16 x 64/512)
are the API's.
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


# --- audio ------------------------------------------------------------------------------
class PcmFormat(Strict):
    type: Literal["audio/pcm"]
    rate: Annotated[int, Field(ge=24000, le=24000)] = 24000


class PcmuFormat(Strict):
    type: Literal["audio/pcmu"]


class PcmaFormat(Strict):
    type: Literal["audio/pcma"]


AudioFormat = Annotated[
    Annotated[PcmFormat, Tag(tag("audio/pcm"))]
    | Annotated[PcmuFormat, Tag(tag("audio/pcmu"))]
    | Annotated[PcmaFormat, Tag(tag("audio/pcma"))],
    Discriminator(tag_of("type")),
]


class Transcription(Strict):
    model: str | None = None
    language: str | None = None
    languages: list[str] | None = None
    keywords: list[str] | None = None
    prompt: str | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class ServerVad(Strict):
    type: Literal["server_vad"]
    threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    prefix_padding_ms: Annotated[int, Field(ge=0)] | None = None
    silence_duration_ms: Annotated[int, Field(ge=0)] | None = None
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: Annotated[int, Field(ge=5000, le=30000)] | None = None


class SemanticVad(Strict):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = Annotated[
    Annotated[ServerVad, Tag(tag("server_vad"))] | Annotated[SemanticVad, Tag(tag("semantic_vad"))],
    Discriminator(tag_of("type")),
]


class AudioInput(Strict):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    noise_reduction: NoiseReduction | None = None
    turn_detection: TurnDetection | None = None


class AudioOutput(Strict):
    format: AudioFormat | None = None
    voice: Voice | CustomVoice | str | None = None
    speed: Annotated[float, Field(ge=0.25, le=1.5)] | None = None


class SessionAudio(Strict):
    input: AudioInput | None = None
    output: AudioOutput | None = None


# --- tools --------------------------------------------------------------------------------
class McpTool(Strict):
    type: Literal["mcp"]
    server_label: str
    server_url: str | None = None
    connector_id: str | None = None
    tunnel_id: str | None = None
    authorization: str | None = None
    server_description: str | None = None
    headers: dict[str, str] | None = None
    allowed_tools: list[str] | dict[str, Any] | None = None
    allowed_callers: list[Any] | None = None
    require_approval: Literal["always", "never"] | dict[str, Any] | None = None
    defer_loading: bool | None = None


Tool = Annotated[
    Annotated[FunctionTool, Tag(tag("function"))] | Annotated[McpTool, Tag(tag("mcp"))],
    Discriminator(tag_of("type")),
]


class ToolChoiceMcp(Strict):
    type: Literal["mcp"]
    server_label: str
    name: str | None = None


ToolChoiceObject = Annotated[
    Annotated[ToolChoiceFunction, Tag(tag("function"))] | Annotated[ToolChoiceMcp, Tag(tag("mcp"))],
    Discriminator(tag_of("type")),
]
ToolChoice = Literal["none", "auto", "required"] | ToolChoiceObject


class Reasoning(Strict):
    effort: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class TokenLimits(Strict):
    post_instructions: Annotated[int, Field(ge=0)] | None = None


class RetentionRatio(Strict):
    type: Literal["retention_ratio"]
    retention_ratio: Annotated[float, Field(ge=0, le=1)]
    token_limits: TokenLimits | None = None


class Tracing(Strict):
    workflow_name: str | None = None
    group_id: str | None = None
    metadata: dict[str, Any] | None = None


class Prompt(Strict):
    id: str
    version: str | None = None
    variables: dict[str, Any] | None = None


MaxOutputTokens = Annotated[int, Field(ge=1, le=4096)] | Literal["inf"]
Modalities = list[Literal["text", "audio"]]


# --- sessions -----------------------------------------------------------------------------
class RealtimeSession(Strict):
    type: Literal["realtime"]
    output_modalities: Modalities | None = None
    model: str | None = None
    instructions: str | None = None
    audio: SessionAudio | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    tracing: Literal["auto"] | Tracing | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: MaxOutputTokens | None = None
    truncation: Literal["auto", "disabled"] | RetentionRatio | None = None
    prompt: Prompt | None = None


class TranscriptionAudio(Strict):
    input: AudioInput | None = None


class TranscriptionSession(Strict):
    type: Literal["transcription"]
    audio: TranscriptionAudio | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


Session = Annotated[
    Annotated[RealtimeSession, Tag(tag("realtime"))]
    | Annotated[TranscriptionSession, Tag(tag("transcription"))],
    Discriminator(tag_of("type")),
]


# --- conversation items -------------------------------------------------------------------
class InputText(Strict):
    type: Literal["input_text"]
    text: str


class InputAudio(Strict):
    type: Literal["input_audio"]
    audio: str | None = None
    transcript: str | None = None


class InputImage(Strict):
    type: Literal["input_image"]
    image_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class OutputText(Strict):
    type: Literal["output_text"]
    text: str | None = None


class OutputAudio(Strict):
    type: Literal["output_audio"]
    audio: str | None = None
    transcript: str | None = None


UserContent = Annotated[
    Annotated[InputText, Tag(tag("input_text"))]
    | Annotated[InputAudio, Tag(tag("input_audio"))]
    | Annotated[InputImage, Tag(tag("input_image"))],
    Discriminator(tag_of("type")),
]
AssistantContent = Annotated[
    Annotated[OutputText, Tag(tag("output_text"))] | Annotated[OutputAudio, Tag(tag("output_audio"))],
    Discriminator(tag_of("type")),
]
SystemContent = Annotated[Annotated[InputText, Tag(tag("input_text"))], Discriminator(tag_of("type"))]
ItemStatus = Literal["completed", "incomplete", "in_progress"]


class _ItemBase(Strict):
    id: ItemId | None = None
    object: Literal["realtime.item"] | None = None
    status: ItemStatus | None = None


class SystemMessage(_ItemBase):
    type: Literal["message"]
    role: Literal["system"]
    content: list[SystemContent]


class UserMessage(_ItemBase):
    type: Literal["message"]
    role: Literal["user"]
    content: list[UserContent]


class AssistantMessage(_ItemBase):
    type: Literal["message"]
    role: Literal["assistant"]
    content: list[AssistantContent]


class FunctionCall(_ItemBase):
    type: Literal["function_call"]
    call_id: ItemId | None = None
    name: str
    arguments: str


class FunctionCallOutput(_ItemBase):
    type: Literal["function_call_output"]
    call_id: ItemId
    output: str


class McpApprovalResponse(Strict):
    type: Literal["mcp_approval_response"]
    id: ItemId | None = None
    approval_request_id: str
    approve: bool
    reason: str | None = None


class McpItem(Strict):
    """mcp_list_tools / mcp_call / mcp_approval_request items, echoed back by clients."""

    type: Literal["mcp_list_tools", "mcp_call", "mcp_approval_request"]
    id: ItemId | None = None
    server_label: str | None = None
    tools: list[dict[str, Any]] | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    error: dict[str, Any] | None = None
    approval_request_id: str | None = None


class ItemReference(Strict):
    type: Literal["item_reference"]
    id: str


def _item_kind(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind == "message":
        return tag("message." + str(value.get("role")))
    return tag(str(kind)) if isinstance(kind, str) else None


_ITEM_MEMBERS = (
    Annotated[SystemMessage, Tag(tag("message.system"))]
    | Annotated[UserMessage, Tag(tag("message.user"))]
    | Annotated[AssistantMessage, Tag(tag("message.assistant"))]
    | Annotated[FunctionCall, Tag(tag("function_call"))]
    | Annotated[FunctionCallOutput, Tag(tag("function_call_output"))]
    | Annotated[McpApprovalResponse, Tag(tag("mcp_approval_response"))]
    | Annotated[McpItem, Tag(tag("mcp_list_tools"))]
    | Annotated[McpItem, Tag(tag("mcp_call"))]
    | Annotated[McpItem, Tag(tag("mcp_approval_request"))]
)
Item = Annotated[_ITEM_MEMBERS, Discriminator(_item_kind)]
InputItem = Annotated[
    _ITEM_MEMBERS | Annotated[ItemReference, Tag(tag("item_reference"))],
    Discriminator(_item_kind),
]


# --- responses ----------------------------------------------------------------------------
class ResponseAudioOutput(Strict):
    format: AudioFormat | None = None
    voice: Voice | CustomVoice | str | None = None


class ResponseAudio(Strict):
    output: ResponseAudioOutput | None = None


class ResponseParams(Strict):
    output_modalities: Modalities | None = None
    instructions: str | None = None
    audio: ResponseAudio | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: MaxOutputTokens | None = None
    conversation: str | None = None
    metadata: Metadata | None = None
    prompt: Prompt | None = None
    input: list[InputItem] | None = None


# --- events -------------------------------------------------------------------------------
class _Event(Strict):
    event_id: EventId | None = None


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: Session


class SessionClose(_Event):
    type: Literal["session.close"]


class InputAudioBufferAppend(_Event):
    type: Literal["input_audio_buffer.append", "session.input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_Event):
    type: Literal["input_audio_buffer.clear"]


class ConversationItemCreate(_Event):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: Item


class ConversationItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: Annotated[int, Field(ge=0)]
    audio_end_ms: Annotated[int, Field(ge=0)]


class ConversationItemDelete(_Event):
    type: Literal["conversation.item.delete"]
    item_id: str


class ConversationItemRetrieve(_Event):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: str | None = None


EVENT_MODELS: dict[str, type[Strict]] = {
    "session.update": SessionUpdate,
    "session.close": SessionClose,
    "input_audio_buffer.append": InputAudioBufferAppend,
    "session.input_audio_buffer.append": InputAudioBufferAppend,
    "input_audio_buffer.commit": InputAudioBufferCommit,
    "input_audio_buffer.clear": InputAudioBufferClear,
    "conversation.item.create": ConversationItemCreate,
    "conversation.item.truncate": ConversationItemTruncate,
    "conversation.item.delete": ConversationItemDelete,
    "conversation.item.retrieve": ConversationItemRetrieve,
    "response.create": ResponseCreate,
    "response.cancel": ResponseCancel,
}
ADAPTERS: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(m) for name, m in EVENT_MODELS.items()}
