"""The simulated session's responses: planning what to say or call, streaming it, finishing it.

Split from ``session.py`` as a mixin: it works on the session's config, conversation and emit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from relay.core.errors import InvalidEvent, error_event, new_id
from relay.simulator.arguments import arguments_for
from relay.simulator.config import SimulatorConfig
from relay.simulator.responses import (
    ResponsePlan,
    ResponseStreamer,
    new_function_call_item,
    new_message_item,
    public_item,
    usage,
)
from relay.simulator.state import Conversation, output_encoding
from relay.simulator.timing import Outbox

_log = logging.getLogger(__name__)
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def server_error_event() -> dict[str, Any]:
    """The live API's transient failure (reference §4): non-fatal, code null."""
    return error_event(None, SERVER_ERROR_MESSAGE, error_type="server_error")


class Responding:
    """Response handling for :class:`relay.simulator.session.SimSession`."""

    config: SimulatorConfig
    session: dict[str, Any]
    conversation: Conversation
    conversation_id: str
    script: Any
    active: asyncio.Task[None] | None
    streaming: set[asyncio.Task[None]]
    active_streamer: ResponseStreamer | None
    assistant_audio: bool
    outbox: Outbox

    if TYPE_CHECKING:

        async def emit(self, event: dict[str, Any], *, gap_s: float = 0.0) -> None: ...

    def _fail(self, event: dict[str, Any], code: str, message: str, param: str | None = None) -> InvalidEvent:
        return InvalidEvent(code, message, param, event.get("event_id"))

    # ------------------------------------------------------------------ responses
    async def _on_response_create(self, event: dict[str, Any]) -> None:
        params = event.get("response") or {}
        out_of_band = params.get("conversation") == "none"
        if self.active is not None and not out_of_band:
            raise self._fail(
                event,
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self.active.get_name()}. Wait until the response is finished "
                "before creating a new one.",
            )
        await self.start_response(params)

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        if self.active is None:
            raise self._fail(
                event, "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        await self.cancel_active("client_cancelled")

    async def start_response(self, params: dict[str, Any]) -> None:
        plan = self._plan(params)
        task = asyncio.create_task(self._run_response(plan), name=plan.response_id)
        self.streaming.add(task)  # owned here: close() cancels what is still streaming
        task.add_done_callback(self.streaming.discard)
        if plan.in_conversation:
            self.active = task
        await asyncio.sleep(0)  # let response.created go out before the next client event

    async def close(self) -> None:
        """Stop every response still streaming and drop what waits to be sent (the socket is gone)."""
        tasks = list(self.streaming)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.outbox.close()

    async def cancel_active(self, reason: str) -> None:
        task, streamer = self.active, self.active_streamer
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if streamer is not None:
            plan = streamer.plan
            plan.status, plan.status_details = "cancelled", {"type": "cancelled", "reason": reason}
            await self._finish(plan)

    def _plan(self, params: dict[str, Any]) -> ResponsePlan:
        session = self.session
        # ``input`` replaces the conversation as this response's context (reference §2.6).
        context = params.get("input", self.conversation.items)
        audio_out = (params.get("audio") or {}).get("output") or {}
        fmt = audio_out.get("format") or session["audio"]["output"]["format"]
        plan = ResponsePlan(
            response_id=new_id("resp_"),
            modalities=params.get("output_modalities") or session["output_modalities"],
            voice=audio_out.get("voice") or session["audio"]["output"]["voice"],
            audio_format=fmt,
            encoding=output_encoding({"audio": {"output": {"format": fmt}}}),
            text=self.script.next_reply() or self.config.reply_text or _default_reply(context),
            metadata=params.get("metadata"),
            max_output_tokens=params.get("max_output_tokens", session["max_output_tokens"]),
            in_conversation=params.get("conversation") != "none",
            conversation_id=self.conversation_id,
        )
        plan.function_call = self._function_call(params, context)
        return plan

    def _function_call(self, params: dict[str, Any], context: list[Any]) -> tuple[str, str] | None:
        tools = params.get("tools", self.session["tools"]) or []
        names = [t["name"] for t in tools if t.get("type") == "function"]
        choice = params.get("tool_choice", self.session["tool_choice"])
        if not names or choice == "none":
            return None
        last = context[-1] if context else {}
        if last.get("type") == "function_call_output":
            return None
        forced = (
            choice.get("name") if isinstance(choice, dict) else names[0] if choice == "required" else None
        )
        said = " ".join(str(p.get("text") or p.get("transcript") or "") for p in last.get("content") or [])
        name = forced or next((n for n in names if _mentions(said, n)), None)
        if name is None:
            return None
        scripted = self.script.tool_arguments()
        if scripted is not None:
            return (name, scripted)
        tool: dict[str, Any] = next(
            (t for t in tools if t.get("type") == "function" and t["name"] == name), {}
        )
        return (name, arguments_for(tool.get("parameters"), said))

    async def _run_response(self, plan: ResponsePlan) -> None:
        streamer = ResponseStreamer(
            plan, self.emit, speed=self.config.speed, chunk_ms=self.config.audio_chunk_ms
        )
        if plan.in_conversation:
            self.active_streamer = streamer
        # The acknowledgement of response.create (or at once after a VAD turn): this task
        # inherited the reply time of the client event that started it.
        await self.emit({"type": "response.created", "response": plan.shell()})
        try:
            await self._first_token()
            await self._stream(plan, streamer)
        except asyncio.CancelledError:
            self._record_partial(streamer)
            raise
        except Exception:  # task root: a simulator bug fails this response, not the session
            _log.exception("simulated response %s failed", plan.response_id)
            await self.emit(server_error_event())
            plan.status = "failed"
            plan.status_details = {"type": "failed", "error": {"type": "server_error", "code": None}}
        await self._finish(plan)

    async def _first_token(self) -> None:
        """The model's time to first token, counted from when response.created went out."""
        delay = self.config.timing.first_delta_ms / 1000
        if delay:
            await self.outbox.flushed()
        self.outbox.detach()  # from here on this task streams: its events are due at once
        if delay:
            await asyncio.sleep(delay)

    async def _stream(self, plan: ResponsePlan, streamer: ResponseStreamer) -> None:
        if plan.function_call is not None:
            item = new_function_call_item(plan.function_call[0])
        else:
            item = new_message_item()
            plan.text = self._limit(plan)
        streamer.item = item
        await self.emit(
            {
                "type": "response.output_item.added",
                "response_id": plan.response_id,
                "output_index": 0,
                "item": dict(item),
            }
        )
        if plan.in_conversation:
            before = self.conversation.insert(item, None)
            await self.emit(
                {"type": "conversation.item.added", "previous_item_id": before, "item": dict(item)}
            )
        if plan.function_call is not None:
            await streamer.stream_function_call(item)
        else:
            await streamer.stream_message(item)
            item["_audio_ms"] = streamer.spoken_ms
            self.assistant_audio |= "audio" in plan.modalities
        self._complete_item(plan, item)

    def _limit(self, plan: ResponsePlan) -> str:
        cap = plan.max_output_tokens
        pieces = plan.text.split(" ")
        if isinstance(cap, int) and cap < len(pieces) * 2:
            plan.status_details = {"type": "incomplete", "reason": "max_output_tokens"}
            return " ".join(pieces[: max(1, cap // 2)])
        return plan.text

    def _previous_for_done(self, item_id: str) -> str | None:
        """``previous_item_id`` of a response item's ``conversation.item.done``.

        All eight response items in the recordings follow one rule: the id of the item before
        it, except null when that item is the conversation's first (the live API's quirk).
        """
        position = self.conversation.index_of(item_id)
        return self.conversation.items[position - 1]["id"] if position > 1 else None

    def _complete_item(self, plan: ResponsePlan, item: dict[str, Any]) -> None:
        item["status"] = "incomplete" if plan.status_details else "completed"
        plan.output.append(public_item(item))

    def _record_partial(self, streamer: ResponseStreamer) -> None:
        item = streamer.item
        if item is None:
            return
        item["status"] = "incomplete"
        if item.get("type") == "message":
            audio = "audio" in streamer.plan.modalities
            kind, key = ("output_audio", "transcript") if audio else ("output_text", "text")
            item["content"] = [{"type": kind, key: streamer.streamed_text}]
            item["_audio_ms"] = streamer.spoken_ms
        streamer.plan.output.append(public_item(item))

    async def _finish(self, plan: ResponsePlan) -> None:
        for item in plan.output:
            if plan.in_conversation and self.conversation.find(item["id"]) is not None:
                previous = self._previous_for_done(item["id"])
                await self.emit(
                    {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
                )
            await self.emit(
                {
                    "type": "response.output_item.done",
                    "response_id": plan.response_id,
                    "output_index": 0,
                    "item": item,
                }
            )
        if plan.status == "in_progress":
            plan.status = "incomplete" if plan.status_details else "completed"
        done = plan.shell()
        done["usage"] = usage(plan, 10 + 5 * len(self.conversation.items))
        if plan.in_conversation:
            self.active = None
            self.active_streamer = None
        await self.emit({"type": "response.done", "response": done})
        await self.emit(
            {
                "type": "rate_limits.updated",
                "rate_limits": [{"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5}],
            },
            gap_s=self.config.timing.rate_limits_ms / 1000,
        )


def _default_reply(context: list[Any]) -> str:
    """Deterministic: echo the user's last words, so tests can tell turns apart."""
    for item in reversed(context):
        if isinstance(item, dict) and item.get("role") == "user":
            part = (item.get("content") or [{}])[0]
            said = part.get("text") or part.get("transcript")
            return f"You said: {said}." if said else "I heard you."
    return "Hello! How can I help?"


def _mentions(text: str, tool_name: str) -> bool:
    """The configured trigger: the user names the tool, or a distinctive word of its name."""
    lowered = text.lower()
    words = [w for w in tool_name.lower().split("_") if len(w) > 3 and w not in ("tool", "call")]
    return tool_name.lower() in lowered or any(w in lowered for w in words)
