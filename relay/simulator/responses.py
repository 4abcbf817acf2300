"""Response generation: the GA event sequence in the recorded order, with real audio.

Order (reference §3.2, recordings): response.created, output_item.added, conversation.item.added,
content_part.added, interleaved transcript and audio deltas, output_audio.done,
output_audio_transcript.done, content_part.done, conversation.item.done, output_item.done,
response.done with usage, then rate_limits.updated.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pybase64

from relay.core.errors import new_id
from relay.simulator.audio import bytes_per_ms, chunks, synthesize

Emit = Callable[[dict[str, Any]], Awaitable[None]]


def obfuscation() -> str:
    """Live GA deltas carry a random padding string (reference §3.1)."""
    return secrets.token_urlsafe(secrets.randbelow(12) + 4)


def words(text: str) -> list[str]:
    """Split into the small pieces the API streams as deltas, keeping spaces."""
    return re.findall(r"\s*\S+", text) or [text]


@dataclass
class ResponsePlan:
    """What a response will say or do, decided before streaming starts."""

    response_id: str
    modalities: list[str]
    voice: str
    audio_format: dict[str, Any]
    encoding: str
    text: str
    metadata: dict[str, Any] | None
    max_output_tokens: Any
    in_conversation: bool
    conversation_id: str | None = None  # the session's default conversation
    function_call: tuple[str, str] | None = None  # (name, arguments)
    output: list[dict[str, Any]] = field(default_factory=list)
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None

    def shell(self) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": self.response_id,
            "status": self.status,
            "status_details": self.status_details,
            "output": self.output,
            "conversation_id": self.conversation_id if self.in_conversation else None,
            "output_modalities": self.modalities,
            "max_output_tokens": self.max_output_tokens,
            "audio": {"output": {"format": self.audio_format, "voice": self.voice}},
            "usage": None,
            "metadata": self.metadata,
        }


def usage(plan: ResponsePlan, input_tokens: int) -> dict[str, Any]:
    output_tokens = max(1, len(plan.text.split()) * 2)
    audio = output_tokens if "audio" in plan.modalities else 0
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {
            "text_tokens": input_tokens,
            "audio_tokens": 0,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": output_tokens - audio, "audio_tokens": audio},
    }


class ResponseStreamer:
    """Streams one response's events through ``emit``; cancellable between events."""

    def __init__(self, plan: ResponsePlan, emit: Emit, *, speed: float, chunk_ms: int) -> None:
        self.plan = plan
        self.emit = emit
        self.speed = speed
        self.chunk_ms = chunk_ms
        self.item: dict[str, Any] | None = None
        self.spoken_ms = 0  # audio sent so far: what truncation may cut back to
        self.streamed_text = ""

    def ids(self, item_id: str, content: bool = True) -> dict[str, Any]:
        base: dict[str, Any] = {"response_id": self.plan.response_id, "item_id": item_id}
        base["output_index"] = 0
        if content:
            base["content_index"] = 0
        return base

    async def pause(self, ms: float) -> None:
        await asyncio.sleep(ms / 1000 / self.speed)

    async def stream_message(self, item: dict[str, Any]) -> None:
        audio = "audio" in self.plan.modalities
        part_type = "audio" if audio else "text"
        empty_part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        ids = self.ids(item["id"])
        await self.emit({"type": "response.content_part.added", **ids, "part": empty_part})
        if audio:
            await self._stream_audio(ids)
        else:
            await self._stream_text(ids)
        text = self.streamed_text
        part = {"type": "audio", "transcript": text} if audio else {"type": "text", "text": text}
        await self.emit({"type": "response.content_part.done", **ids, "part": part})
        content_type = "output_audio" if part_type == "audio" else "output_text"
        key = "transcript" if audio else "text"
        item["content"] = [{"type": content_type, key: text}]

    async def _stream_text(self, ids: dict[str, Any]) -> None:
        for piece in words(self.plan.text):
            self.streamed_text += piece
            delta = {"type": "response.output_text.delta", **ids, "delta": piece}
            await self.emit({**delta, "obfuscation": obfuscation()})
            await self.pause(40)
        await self.emit({"type": "response.output_text.done", **ids, "text": self.streamed_text})

    async def _stream_audio(self, ids: dict[str, Any]) -> None:
        audio = synthesize(self.plan.text, self.plan.encoding)
        pieces = words(self.plan.text)
        audio_chunks = list(chunks(audio, self.plan.encoding, self.chunk_ms))
        per_chunk = max(1, -(-len(pieces) // max(1, len(audio_chunks))))
        for index, chunk in enumerate(audio_chunks):
            for piece in pieces[index * per_chunk : (index + 1) * per_chunk]:
                self.streamed_text += piece
                transcript = {"type": "response.output_audio_transcript.delta", **ids}
                await self.emit({**transcript, "delta": piece, "obfuscation": obfuscation()})
            delta = pybase64.b64encode_as_string(chunk)
            await self.emit({"type": "response.output_audio.delta", **ids, "delta": delta})
            self.spoken_ms += len(chunk) // bytes_per_ms(self.plan.encoding)
            await self.pause(len(chunk) / bytes_per_ms(self.plan.encoding))
        await self.emit({"type": "response.output_audio.done", **ids})
        done = {"type": "response.output_audio_transcript.done", **ids}
        await self.emit({**done, "transcript": self.streamed_text})

    async def stream_function_call(self, item: dict[str, Any]) -> None:
        assert self.plan.function_call is not None
        name, arguments = self.plan.function_call
        ids = {**self.ids(item["id"], content=False), "call_id": item["call_id"]}
        for piece in re.findall(r".{1,8}", arguments, flags=re.DOTALL) or [arguments]:
            delta = {"type": "response.function_call_arguments.delta", **ids, "delta": piece}
            await self.emit({**delta, "obfuscation": obfuscation()})
            item["arguments"] += piece
            await self.pause(30)
        done = {"type": "response.function_call_arguments.done", **ids}
        await self.emit({**done, "name": name, "arguments": arguments})


def new_message_item() -> dict[str, Any]:
    return {
        "id": new_id("item_"),
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }


def new_function_call_item(name: str) -> dict[str, Any]:
    return {
        "id": new_id("item_"),
        "type": "function_call",
        "status": "in_progress",
        "name": name,
        "call_id": new_id("call_", 16),
        "arguments": "",
    }


def public_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}
