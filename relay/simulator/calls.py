"""Simulated phone calls: the Realtime API's SIP side, for tests and demos.

What the live API does, and where each behaviour here comes from (docs/simulator.md, "Calls"):

* A call arrives as the webhook event ``realtime.call.incoming`` (OpenAPI ``WebhookRealtimeCallIncoming``:
  ``data.call_id``, an ``rtc_...`` id, and ``data.sip_headers``). Here the control API creates one
  (``POST /_sim/calls``) and returns that payload, signed as OpenAI signs webhooks when given a
  secret (Standard Webhooks: ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``).
* ``POST .../realtime/calls/{call_id}/accept|reject|refer|hangup`` answer 200 with no body (spec).
  An id the API never issued is 404 ``call_id_not_found`` (Azure's answer to a synthetic id); an
  action on an ended call is 400 ``call_id_not_found`` (OpenAI's hangup of an ended call). State
  errors (accepted twice, refer before accept) and all messages are the simulator's wording.
* ``/v1/realtime?call_id=`` attaches a control ("sideband") socket: ``session.created`` with the
  session as it stands, then the session's events. The caller's audio travels on the SIP leg,
  not the socket: output audio is played to the line (``output_audio_buffer.started``/``stopped``,
  the spec's WebRTC/SIP events, mark it) and the caller's speech is scripted through the control
  API. An unknown or ended call is refused with HTTP 404 before the upgrade, as the live API does.
* The call outlives its sockets: one that drops leaves the session running (responses keep playing
  to the caller) and a new one attaches to the same session; only a hangup, a refer or the caller
  hanging up ends the call, and then its sockets close at once (as the live API closes the socket
  when the caller hangs up).
* ``format_reset`` (``SimulatorConfig.call_format_reset``, or per call) restores the live API's old
  behaviour behind F4: an accept or ``session.update`` carrying ``tools`` but no audio formats
  resets the formats to PCM, and an invalid accept is taken (200) with the default PCM session.
  The line then carries PCM bytes to a G.711 phone: static, counted in ``static_ms``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import pybase64
from aiohttp import web

from relay.core.calls import rest_error, validate_accept
from relay.core.errors import InvalidEvent, error_event, new_id
from relay.core.validation import Validator
from relay.core.websocket import OP_TEXT
from relay.io.websocket import WebSocketConnection
from relay.simulator.audio import Encoding, bytes_per_ms, encode, synthesize
from relay.simulator.channel import SimChannel
from relay.simulator.config import SimulatorConfig
from relay.simulator.responding import server_error_event
from relay.simulator.session import SimSession
from relay.simulator.state import apply_session_update, default_session, input_encoding, merge

_log = logging.getLogger(__name__)
_VALIDATOR = Validator()
_PCM = {"type": "audio/pcm", "rate": 24000}
_ENCODINGS = {"audio/pcmu": "pcmu", "audio/pcma": "pcma", "audio/pcm": "pcm16"}
_ENDED = frozenset({"rejected", "referred", "ended"})
_CALLER_CHUNK_MS = 100
_CALLER_PAUSE_MS = 1800  # after the words: longer than any turn detector's end-of-turn silence
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)

KeyOf = Callable[[web.Request], str | None]


def _error(status: int, code: str | None, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(body, status=status)


@dataclass
class PhoneLine:
    """The SIP leg: G.711 in one encoding; what the assistant played on it, and what it heard."""

    encoding: str
    played_ms: float = 0.0
    static_ms: float = 0.0  # played in another encoding than the line's: noise to the caller
    caller_ms: float = 0.0
    caller_static_ms: float = 0.0  # the caller's audio read by the session as another encoding
    response_encodings: dict[str, str] = field(default_factory=dict)

    def play(self, encoding: str, size: int) -> None:
        ms = size / bytes_per_ms(encoding)
        self.played_ms += ms
        if encoding != self.encoding:
            self.static_ms += ms

    def snapshot(self) -> dict[str, Any]:
        keys = ("encoding", "played_ms", "static_ms", "caller_ms", "caller_static_ms")
        return {key: getattr(self, key) for key in keys}


class CallSession(SimSession):
    """A call's session: with ``format_reset``, a ``session.update`` that carries tools but no
    formats resets them to PCM, as the live API once did (F4)."""

    format_reset = False

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        if self.format_reset and isinstance(event.get("session"), dict):
            event = {**event, "session": reset_formats(event["session"])}
        await super()._on_session_update(event)


def reset_formats(patch: dict[str, Any]) -> dict[str, Any]:
    """The old API's reading of a body with ``tools`` and no audio format: PCM both ways."""
    audio = patch.get("audio")
    sides = [audio.get(side) for side in ("input", "output")] if isinstance(audio, dict) else []
    named = any(isinstance(side, dict) and "format" in side for side in sides)
    if "tools" not in patch or named:
        return patch
    pcm = {"audio": {"input": {"format": dict(_PCM)}, "output": {"format": dict(_PCM)}}}
    merged: dict[str, Any] = merge(patch, pcm)
    return merged


@dataclass
class SimCall:
    call_id: str
    sip_headers: list[dict[str, str]]
    line: PhoneLine
    format_reset: bool
    status: str = "ringing"  # ringing | accepted | rejected | referred | ended
    session: CallSession | None = None
    channels: set[SimChannel] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every API request, with its status
    sockets_opened: int = 0
    rejected_with: int | None = None
    referred_to: str | None = None
    ended_by: str | None = None
    _audio_started: set[str] = field(default_factory=set)

    async def deliver(self, event: dict[str, Any]) -> None:
        """The session's events: audio to the line, everything else to the control sockets."""
        kind = event["type"]
        response_id = str(event.get("response_id") or (event.get("response") or {}).get("id") or "")
        if kind == "response.created":
            fmt = event["response"]["audio"]["output"]["format"]
            self.line.response_encodings[response_id] = _ENCODINGS.get(fmt.get("type"), "pcm16")
        if kind == "response.output_audio.delta":
            if response_id not in self._audio_started:
                self._audio_started.add(response_id)
                await self._send({"type": "output_audio_buffer.started", "response_id": response_id})
            encoding = self.line.response_encodings.get(response_id, self.line.encoding)
            self.line.play(encoding, len(pybase64.b64decode(event["delta"])))
            return
        await self._send(event)
        if kind == "response.done" and response_id in self._audio_started:
            self._audio_started.discard(response_id)
            self.line.response_encodings.pop(response_id, None)
            await self._send({"type": "output_audio_buffer.stopped", "response_id": response_id})

    async def _send(self, event: dict[str, Any]) -> None:
        frame = orjson.dumps({"event_id": new_id("event_"), **event})
        for channel in list(self.channels):
            await channel.send(frame)

    def snapshot(self) -> dict[str, Any]:
        session = self.session.snapshot() if self.session is not None else None
        return {
            "call_id": self.call_id,
            "status": self.status,
            "format_reset": self.format_reset,
            "sip_headers": self.sip_headers,
            "line": self.line.snapshot(),
            "config": session["config"] if session else None,
            "conversation": session["conversation"] if session else [],
            "control_sockets": len(self.channels),
            "sockets_opened": self.sockets_opened,
            "requests": self.requests,
            "rejected_with": self.rejected_with,
            "referred_to": self.referred_to,
            "ended_by": self.ended_by,
        }


class CallBoard:
    """Every simulated call: the API's call endpoints, the control sockets, the control API."""

    def __init__(self, config: SimulatorConfig, script: Any, key_of: KeyOf) -> None:
        self.config = config
        self.script = script
        self.key_of = key_of
        self.calls: dict[str, SimCall] = {}

    # ------------------------------------------------------------------ the API's endpoints
    async def action(self, request: web.Request) -> web.Response:
        """``POST .../realtime/calls/{call_id}/{accept|reject|refer|hangup}``."""
        refused = self._auth(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.match_info["call_id"])
        action = request.match_info["action"]
        if call is None:
            return _error(404, "call_id_not_found", f"Call '{request.match_info['call_id']}' not found.")
        body = await _optional_json(request)
        response = await self._act(call, action, body)
        call.requests.append({"action": action, "status": response.status})
        return response

    async def _act(self, call: SimCall, action: str, body: Any) -> web.Response:
        if call.status in _ENDED:
            return _error(400, "call_id_not_found", f"Call '{call.call_id}' has ended.")
        if isinstance(body, web.Response):
            return body
        if action == "accept":
            return await self._accept(call, body)
        if action == "reject":
            return await self._reject(call, body)
        if call.status != "accepted":
            return _error(400, "call_not_active", f"Call '{call.call_id}' has not been accepted.")
        if action == "refer":
            return await self._refer(call, body)
        await self.end(call, "ended", "hangup")
        return web.Response(status=200)

    async def _accept(self, call: SimCall, body: Any) -> web.Response:
        if call.status == "accepted":
            return _error(400, "call_already_accepted", f"Call '{call.call_id}' has already been accepted.")
        try:
            validate_accept(body, _VALIDATOR)
        except InvalidEvent as exc:
            if not call.format_reset:
                return web.json_response(rest_error(exc), status=400)
            body = None  # the old API took the call anyway, with its default (PCM) session
        model = str((body or {}).get("model") or "gpt-realtime")
        config = default_session(model, self.config.session_max_s)
        if body is not None:
            # The SDP answer fixed the line's codec: it is the session's format unless the body
            # names one (typeless, so the patch merges into it rather than replacing it).
            line = {"type": _fmt_type(call.line.encoding)}
            patch = {
                k: v for k, v in (reset_formats(body) if call.format_reset else body).items() if k != "type"
            }
            line_formats = {"audio": {"input": {"format": line}, "output": {"format": line}}}
            config = apply_session_update(config, merge(line_formats, patch))
        session = CallSession(self.config, model, call.deliver, self.script)
        session.format_reset = call.format_reset
        session.configure(config)
        call.session, call.status = session, "accepted"
        return web.Response(status=200)

    async def _reject(self, call: SimCall, body: Any) -> web.Response:
        if call.status == "accepted":
            return _error(400, "call_already_accepted", f"Call '{call.call_id}' was accepted; hang it up.")
        problem = _check_fields(body, {"status_code": int}, required=())
        if problem is not None:
            return problem
        call.rejected_with = int((body or {}).get("status_code", 603))  # 603 Decline by default (spec)
        await self.end(call, "rejected", "reject")
        return web.Response(status=200)

    async def _refer(self, call: SimCall, body: Any) -> web.Response:
        problem = _check_fields(body, {"target_uri": str}, required=("target_uri",))
        if problem is not None:
            return problem
        call.referred_to = body["target_uri"]
        await self.end(call, "referred", "refer")
        return web.Response(status=200)

    def _auth(self, request: web.Request) -> web.Response | None:
        key = self.key_of(request)
        if not key:
            return _error(401, None, _NO_KEY)
        if self.config.api_keys and key not in self.config.api_keys:
            shown = f"{key[:8]}{'*' * max(0, len(key) - 12)}{key[-4:]}"
            message = f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."
            return _error(401, "invalid_api_key", message)
        return None

    async def end(self, call: SimCall, status: str, by: str) -> None:
        """The call is over: its sockets close at once and its session stops."""
        call.status, call.ended_by = status, by
        for channel in list(call.channels):
            channel.conn.close_now(1000)
        if call.session is not None:
            await call.session.close()

    # ------------------------------------------------------------------ control sockets
    def socket_refusal(self, request: web.Request) -> web.Response | None:
        """Before the upgrade: a socket for a call that is not (or no longer) answered gets 404."""
        if request.query.get("model") or request.query.get("deployment"):
            return _error(400, "invalid_request_error", "Provide either a model or a call_id, not both.")
        call = self.calls.get(request.query.get("call_id", ""))
        if call is None or call.status != "accepted":
            return _error(404, "call_id_not_found", "Call not found.")
        return None

    async def serve_socket(self, request: web.Request, conn: WebSocketConnection) -> None:
        call = self.calls[request.query["call_id"]]
        session = call.session
        if call.status != "accepted" or session is None:  # ended during the handshake
            conn.close_now(1000)
            return
        channel = SimChannel(
            conn, arrived=_ignore, take_now=_never, ping_interval_s=self.config.ping_interval_s
        )
        created = {"type": "session.created", "event_id": new_id("event_"), "session": session.session}
        await channel.send(orjson.dumps(created))  # before the socket joins: nothing overtakes it
        call.channels.add(channel)
        call.sockets_opened += 1
        channel.start()
        try:
            async for opcode, payload in channel.messages():
                await self._frame(call, session, opcode, payload)
        finally:
            call.channels.discard(channel)  # the call goes on without this socket
            conn.abort()

    async def _frame(self, call: SimCall, session: CallSession, opcode: int, payload: bytes) -> None:
        async with call.lock:
            if opcode != OP_TEXT:
                message = "Expected a text WebSocket message; binary frames are not supported."
                await session.reply(error_event("invalid_event", message))
                return
            try:
                await session.handle_frame(payload)
            except Exception:  # the reader is a task root: answer as the live API does
                _log.exception("simulated call %s failed on a client frame", call.call_id)
                await session.reply(server_error_event())

    async def close(self) -> None:
        for call in list(self.calls.values()):
            if call.status not in _ENDED:
                await self.end(call, "ended", "shutdown")

    # ------------------------------------------------------------------ control API
    async def create(self, request: web.Request) -> web.Response:
        """``POST /_sim/calls``: a call rings; the answer is its webhook event."""
        body = await _optional_json(request)
        if isinstance(body, web.Response) or not isinstance(body or {}, dict):
            return web.json_response({"error": "expected a JSON object"}, status=400)
        options: dict[str, Any] = body or {}
        line_format = options.get("line_format", "audio/pcmu")
        if line_format not in ("audio/pcmu", "audio/pcma"):
            return web.json_response({"error": "line_format: audio/pcmu or audio/pcma"}, status=400)
        call = SimCall(
            call_id=f"rtc_{secrets.token_hex(16)}",
            sip_headers=options.get("sip_headers") or _sip_headers(),
            line=PhoneLine(_ENCODINGS[line_format]),
            format_reset=bool(options.get("format_reset", self.config.call_format_reset)),
        )
        self._remember(call)
        event = webhook_event(call)
        answer: dict[str, Any] = {"call_id": call.call_id, "event": event}
        if options.get("webhook_secret"):
            try:
                answer["webhook"] = signed_webhook(event, str(options["webhook_secret"]))
            except (binascii.Error, ValueError):
                return web.json_response({"error": "webhook_secret: whsec_<base64>"}, status=400)
        return web.json_response(answer, status=201)

    async def inspect(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            raise web.HTTPNotFound(text="no such call")
        return web.json_response(call.snapshot())

    async def caller(self, request: web.Request) -> web.Response:
        """``POST /_sim/calls/{id}/caller``: ``{"say": "..."}`` speaks on the line; ``{"hangup":
        true}`` hangs up; ``{"drop_sockets": true}`` cuts the call's control sockets (no close
        frame, as a network drop) while the call itself goes on."""
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            raise web.HTTPNotFound(text="no such call")
        body = await _optional_json(request)
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="expected a JSON object")
        if call.status != "accepted" or call.session is None:
            raise web.HTTPConflict(text=f"the call is {call.status}")
        if body.get("drop_sockets"):
            for channel in list(call.channels):
                channel.conn.abort()
        elif body.get("hangup"):
            await self.end(call, "ended", "caller")
        elif isinstance(body.get("say"), str):
            await self._say(call, call.session, body["say"])
        return web.json_response({"ok": True})

    async def _say(self, call: SimCall, session: CallSession, text: str) -> None:
        """The caller's words as line audio, then a pause; what they said is what transcribes."""
        self.script.transcripts.append(text)
        encoding = call.line.encoding
        audio = synthesize(text, cast(Encoding, encoding)) + encode(bytes(_CALLER_PAUSE_MS * 16), encoding)
        size = bytes_per_ms(encoding) * _CALLER_CHUNK_MS
        for start in range(0, len(audio), size):
            chunk = audio[start : start + size]
            if call.status != "accepted":  # hung up mid-sentence
                return
            async with call.lock:
                ms = len(chunk) / bytes_per_ms(encoding)
                call.line.caller_ms += ms
                if input_encoding(session.session) != encoding:
                    call.line.caller_static_ms += ms
                await session.take_line_audio(chunk)

    def _remember(self, call: SimCall) -> None:
        self.calls[call.call_id] = call
        excess = len(self.calls) - self.config.max_sessions_kept
        for key in [k for k, c in self.calls.items() if c.status in _ENDED][: max(0, excess)]:
            del self.calls[key]


# ---------------------------------------------------------------------- webhooks
def webhook_event(call: SimCall) -> dict[str, Any]:
    return {
        "object": "event",
        "id": f"evt_{secrets.token_hex(16)}",
        "type": "realtime.call.incoming",
        "created_at": int(time.time()),
        "data": {"call_id": call.call_id, "sip_headers": call.sip_headers},
    }


def signed_webhook(event: dict[str, Any], secret: str) -> dict[str, Any]:
    """The delivery as OpenAI makes it: headers and the exact body the signature covers."""
    body = orjson.dumps(event).decode()
    webhook_id, timestamp = f"wh_{secrets.token_hex(16)}", str(int(time.time()))
    key = (
        base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        if secret.startswith("whsec_")
        else secret.encode()
    )
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    headers = {
        "user-agent": "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)",
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{base64.b64encode(digest).decode()}",
    }
    return {"headers": headers, "body": body}


def _sip_headers() -> list[dict[str, str]]:
    return [
        {"name": "From", "value": "sip:+14155550100@sip.example.com"},
        {"name": "To", "value": "sip:+18005550199@sip.example.com"},
        {"name": "Call-ID", "value": secrets.token_hex(16)},
    ]


# ---------------------------------------------------------------------- helpers
async def _optional_json(request: web.Request) -> Any:
    """The request's JSON body, None when it has none, or a 400 in the API's words."""
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _error(400, None, "We could not parse the JSON body of your request.")


def _check_fields(body: Any, fields: dict[str, type], *, required: tuple[str, ...]) -> web.Response | None:
    """The small request bodies of reject and refer: no other keys, each of its type."""
    if body is not None and not isinstance(body, dict):
        return _error(400, "invalid_type", "Invalid type for body: expected an object.")
    body = body or {}
    for name in required:
        if name not in body:
            return _error(400, "missing_required_parameter", f"Missing required parameter: '{name}'.", name)
    for name, value in body.items():
        expected = fields.get(name)
        if expected is None:
            return _error(400, "unknown_parameter", f"Unknown parameter: '{name}'.", name)
        if not isinstance(value, expected) or isinstance(value, bool):
            return _error(400, "invalid_type", f"Invalid type for '{name}'.", name)
    return None


def _fmt_type(encoding: str) -> str:
    return next(kind for kind, enc in _ENCODINGS.items() if enc == encoding)


def _ignore(_: bytes) -> None:
    return None


def _never(_: bytes) -> bool:
    return False
