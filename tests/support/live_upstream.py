"""An upstream that behaves like the live Realtime API where the relay's supervisor is concerned.

Independent of the project's simulator (it shares no code with it or with the relay): an aiohttp
WebSocket server on localhost with the live API's timing (the upgrade answered after
``handshake_s``, ``session.created`` after ``created_s``, every answer ``ack_s`` after its client
event, in order), its duration cap (``error`` ``session_expired`` then close 1001), and, with
``omit_optional``, without the fields Realtime-compatible servers leave out (``conversation_id``
on responses, ``object`` on sessions). It records every client event with its arrival time, so a
test can tell what reached which upstream session, when, and who sent it.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_live{next(_ids):017d}"


@dataclass
class Received:
    event: dict[str, Any]
    at: float  # time.monotonic() on arrival


@dataclass
class LiveSession:
    """One upstream session as the live API would hold it."""

    ws: web.WebSocketResponse
    opened_at: float
    config: dict[str, Any]
    received: list[Received] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    buffer: bytearray = field(default_factory=bytearray)
    audio: bytearray = field(default_factory=bytearray)  # every appended byte, in order
    responding: asyncio.Task[None] | None = None
    closed: bool = False

    @property
    def id(self) -> str:
        return str(self.config["id"])

    def appends(self) -> list[Received]:
        return [r for r in self.received if r.event.get("type") == "input_audio_buffer.append"]


class LiveLikeUpstream:
    def __init__(
        self,
        *,
        handshake_s: float = 0.3,
        created_s: float = 0.005,
        ack_s: float = 0.05,
        expire_after_s: float | None = None,
        omit_optional: bool = False,
        reply_words: int = 12,
        word_interval_s: float = 0.02,
        reject_key_after: int | None = None,
    ) -> None:
        self.handshake_s = handshake_s
        self.created_s = created_s
        self.ack_s = ack_s
        self.expire_after_s = expire_after_s
        self.omit_optional = omit_optional
        self.reply_words = reply_words
        self.word_interval_s = word_interval_s
        self.reject_key_after = reject_key_after  # sessions after this many: the key is refused
        self.sessions: list[LiveSession] = []
        self.upgrades_started: list[float] = []
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self) -> LiveLikeUpstream:
        await self.server.start_server()
        return self

    async def close(self) -> None:
        await self.server.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/v1/realtime"

    @property
    def current(self) -> LiveSession:
        return [s for s in self.sessions if not s.closed][-1]

    async def drop(self, session: LiveSession) -> None:
        """An abrupt loss: the relay sees 1006."""
        session.closed = True
        transport = session.ws._req.transport if session.ws._req is not None else None
        if transport is not None:
            transport.abort()

    async def send_error(self, session: LiveSession, code: str, event_id: str | None) -> None:
        await self._send(session, _error(code, f"Simulated error {code}.", event_id=event_id))

    # ------------------------------------------------------------------ connection
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.upgrades_started.append(time.monotonic())
        await asyncio.sleep(self.handshake_s)
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024, heartbeat=None)
        await ws.prepare(request)
        session = LiveSession(ws, time.monotonic(), _default_session(request.query.get("model")))
        if self.omit_optional:
            session.config.pop("object", None)
        self.sessions.append(session)
        if self.reject_key_after is not None and len(self.sessions) > self.reject_key_after:
            # The live API's answer to a revoked key (reference §1.1): it quotes part of the key.
            message = "Incorrect API key provided: sk-proj-AB****************************WXYZ."
            await self._send(session, _error("invalid_api_key", message))
            await ws.close(code=3000, message=b"invalid_request_error.invalid_api_key")
            session.closed = True
            return ws
        inbox: asyncio.Queue[Received | None] = asyncio.Queue()
        worker = asyncio.create_task(self._work(session, inbox))
        expiry = asyncio.create_task(self._expire(session)) if self.expire_after_s else None
        try:
            await asyncio.sleep(self.created_s)
            await self._send(session, {"type": "session.created", "session": session.config})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    received = Received(orjson.loads(msg.data), time.monotonic())
                    session.received.append(received)
                    if received.event.get("type") == "input_audio_buffer.append":
                        session.audio += base64.b64decode(received.event["audio"])
                    inbox.put_nowait(received)
        finally:
            session.closed = True
            inbox.put_nowait(None)
            for task in (worker, expiry, session.responding):
                if task is not None:
                    task.cancel()
            await asyncio.gather(
                *(t for t in (worker, expiry, session.responding) if t is not None), return_exceptions=True
            )
        return ws

    async def _expire(self, session: LiveSession) -> None:
        assert self.expire_after_s is not None
        await asyncio.sleep(self.expire_after_s)
        minutes = "60 minutes"
        await self._send(
            session, _error("session_expired", f"Your session hit the maximum duration of {minutes}.")
        )
        session.closed = True
        await session.ws.close(
            code=1001, message=f"Your session hit the maximum duration of {minutes}.".encode()
        )

    async def _send(self, session: LiveSession, event: dict[str, Any]) -> None:
        if session.ws.closed:
            return
        event = {"type": event["type"], "event_id": _id("event"), **event}
        try:
            await session.ws.send_str(orjson.dumps(event).decode())  # the API sends text frames
        except ConnectionResetError:
            return

    # ------------------------------------------------------------------ events
    async def _work(self, session: LiveSession, inbox: asyncio.Queue[Received | None]) -> None:
        """Answer client events in order, each ``ack_s`` after it arrived (appends need none)."""
        while (received := await inbox.get()) is not None:
            event = received.event
            if event.get("type") == "input_audio_buffer.append":
                session.buffer += base64.b64decode(event["audio"])
                continue
            await asyncio.sleep(max(0.0, received.at + self.ack_s - time.monotonic()))
            handler = getattr(self, "_on_" + str(event.get("type")).replace(".", "_"), None)
            if handler is not None:
                await handler(session, event)

    async def _on_session_update(self, session: LiveSession, event: dict[str, Any]) -> None:
        session.config = _merge(session.config, event["session"])
        await self._send(session, {"type": "session.updated", "session": session.config})

    async def _on_conversation_item_create(self, session: LiveSession, event: dict[str, Any]) -> None:
        item = dict(event["item"])
        if item.get("id") and any(i["id"] == item["id"] for i in session.items):
            await self._send(
                session,
                _error(
                    "invalid_value",
                    f"Item with id '{item['id']}' already exists.",
                    param="item.id",
                    event_id=event.get("event_id"),
                ),
            )
            return
        item.setdefault("id", _id("item"))
        item.setdefault("status", "completed")
        await self._add(session, item, event.get("previous_item_id"))

    async def _add(self, session: LiveSession, item: dict[str, Any], previous: str | None) -> None:
        ids = [i["id"] for i in session.items]
        if previous == "root":
            session.items.insert(0, item)
        elif previous in ids:
            session.items.insert(ids.index(previous) + 1, item)
        else:
            session.items.append(item)
        before = previous if previous in ids else (ids[-1] if ids else None)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self._send(session, {"type": kind, "previous_item_id": before, "item": item})

    async def _on_conversation_item_delete(self, session: LiveSession, event: dict[str, Any]) -> None:
        session.items = [i for i in session.items if i["id"] != event["item_id"]]
        await self._send(session, {"type": "conversation.item.deleted", "item_id": event["item_id"]})

    async def _on_input_audio_buffer_commit(self, session: LiveSession, event: dict[str, Any]) -> None:
        if len(session.buffer) < 4800:
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                f"audio, but buffer only has {len(session.buffer) / 48:.2f}ms of audio."
            )
            await self._send(
                session, _error("input_audio_buffer_commit_empty", message, event_id=event.get("event_id"))
            )
            return
        item_id = _id("item")
        previous = session.items[-1]["id"] if session.items else None
        session.buffer.clear()
        await self._send(
            session,
            {"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id},
        )
        item = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self._add(session, item, previous)

    async def _on_input_audio_buffer_clear(self, session: LiveSession, event: dict[str, Any]) -> None:
        session.buffer.clear()
        await self._send(session, {"type": "input_audio_buffer.cleared"})

    async def _on_response_create(self, session: LiveSession, event: dict[str, Any]) -> None:
        params = event.get("response") or {}
        out_of_band = params.get("conversation") == "none"
        if session.responding is not None and not session.responding.done() and not out_of_band:
            await self._send(
                session,
                _error(
                    "conversation_already_has_active_response",
                    "Conversation already has an active response in progress.",
                    event_id=event.get("event_id"),
                ),
            )
            return
        task = asyncio.create_task(self._respond(session, out_of_band))
        if not out_of_band:
            session.responding = task

    async def _respond(self, session: LiveSession, out_of_band: bool) -> None:
        response_id, item_id = _id("resp"), _id("item")
        response: dict[str, Any] = {
            "object": "realtime.response",
            "id": response_id,
            "status": "in_progress",
            "output": [],
            "output_modalities": ["text"],
            "usage": None,
        }
        if not self.omit_optional:
            response["conversation_id"] = None if out_of_band else "conv_live"
        await self._send(session, {"type": "response.created", "response": response})
        item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        await self._send(
            session,
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            },
        )
        if not out_of_band:
            await self._add(session, item, None)
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        text = ""
        for n in range(self.reply_words):
            await asyncio.sleep(self.word_interval_s)
            word = f" word{n}"
            text += word
            await self._send(session, {"type": "response.output_text.delta", **ids, "delta": word})
        done_item = {**item, "status": "completed", "content": [{"type": "output_text", "text": text}]}
        await self._send(session, {"type": "response.output_text.done", **ids, "text": text})
        await self._send(
            session,
            {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": 0,
                "item": done_item,
            },
        )
        if not out_of_band:
            for stored in session.items:
                if stored["id"] == item_id:
                    stored.update(done_item)
            await self._send(
                session, {"type": "conversation.item.done", "previous_item_id": None, "item": done_item}
            )
        await self._send(
            session,
            {"type": "response.done", "response": {**response, "status": "completed", "output": [done_item]}},
        )


def _error(code: str, message: str, *, param: str | None = None, event_id: Any = None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": param,
            "event_id": event_id,
        },
    }


def _default_session(model: str | None) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": 24000}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": _id("sess"),
        "model": model or "gpt-realtime",
        "output_modalities": ["audio"],
        "instructions": "Be helpful.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(time.time()) + 3600,
        "audio": {
            "input": {
                "format": dict(pcm),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 200,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": dict(pcm), "voice": "alloy", "speed": 1.0},
        },
        "include": None,
    }


def _merge(base: Any, patch: Any) -> Any:
    """The API's patch semantics: objects merge key by key, anything else (arrays too) replaces."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return patch
    return {**base, **{k: _merge(base.get(k), v) for k, v in patch.items()}}
