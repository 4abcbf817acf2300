"""The simulator's HTTP side: the Realtime WebSocket, auth failures, faults, inspection.

Auth failures behave like the live API (reference §1.1): the upgrade succeeds, then an ``error``
event and close 3000 (key) or 4000 (model, beta shape). The ``/_sim`` endpoints let tests read a
session's effective config and conversation and inject faults at exact points.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from relay.core.errors import error_event
from relay.core.protocol import BETA_DISABLED_MESSAGE, BETA_HEADER_VALUE, BETA_SUBPROTOCOL
from relay.core.websocket import OP_TEXT
from relay.io.websocket import WebSocketConnection, accept
from relay.simulator.calls import CallBoard
from relay.simulator.channel import SimChannel
from relay.simulator.config import SimulatorConfig
from relay.simulator.faults import Fault, FaultBoard
from relay.simulator.responding import server_error_event
from relay.simulator.session import SimSession

_log = logging.getLogger(__name__)

_TOKEN_PREFIX = "openai-insecure-api-key."
# The inspection API keeps the first frames of each session, each cut short: enough for tests
# to check what arrived and in which order without holding hours of audio in memory.
_KEPT_FRAMES = 5000
_KEPT_FRAME_CHARS = 2000
_KEPT_FRAMES_CLOSED = 500
_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_WRITE_LIMITS = (64 * 1024, 16 * 1024)  # asyncio's own defaults: sends wait above 64 KiB


@dataclass
class Script:
    """Queued deterministic outputs for the next responses (shared by all sessions)."""

    replies: deque[str] = field(default_factory=deque)
    transcripts: deque[str] = field(default_factory=deque)
    arguments: str | None = None  # None: arguments that fit the tool's parameters
    transcription_failures: int = 0  # the next N transcriptions fail

    def transcription_fails(self) -> bool:
        if self.transcription_failures <= 0:
            return False
        self.transcription_failures -= 1
        return True

    def next_reply(self) -> str | None:
        return self.replies.popleft() if self.replies else None

    def next_transcript(self) -> str | None:
        return self.transcripts.popleft() if self.transcripts else None

    def tool_arguments(self) -> str | None:
        return self.arguments


@dataclass
class Record:
    """What the inspection API shows about one session, open or closed."""

    session: SimSession
    relay_session: str | None
    created_at: float
    channel: SimChannel
    raw: list[bytes] = field(default_factory=list)  # the first frames, cut, for inspection
    open: bool = True
    close_code: int | None = None
    faults: FaultBoard = field(default_factory=FaultBoard)


class Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.records: dict[str, Record] = {}
        self.script = Script()
        self.refuse_until = 0.0
        self.refuse_kind = ""
        self.new_session_faults: list[Fault] = []  # armed on the next sessions, one each
        self.calls = CallBoard(config, self.script, key_of=lambda request: _key(request, []))

    async def shut_down(self, app: web.Application) -> None:
        """Going away: every open session is closed with 1001, as a restarting server does."""
        for record in list(self.records.values()):
            if record.open:
                record.channel.conn.close_now(1001)
        await self.calls.close()

    # ------------------------------------------------------------------ websocket
    async def realtime(self, request: web.Request) -> web.StreamResponse:
        refused = self._refusal(request)
        resets = refused is not None and self.refuse_kind == "connect"
        if not resets:  # a reset comes before TLS; every HTTP answer comes after the handshake
            await _pause(self.config.timing.handshake_ms)
        if refused is None and "call_id" in request.query:  # a phone call's control socket
            refused = self.calls.socket_refusal(request)
        if refused is not None:
            return refused
        protocols = _protocols(request)
        try:
            upgraded = await accept(
                request,
                subprotocols=("realtime",),
                headers={},
                max_size=_MAX_MESSAGE_BYTES,
                write_limits=_WRITE_LIMITS,
            )
        except ConnectionResetError:  # the client gave up during the handshake delay
            return web.Response(status=400)
        if isinstance(upgraded, web.Response):
            return upgraded  # not a WebSocket upgrade: 400 / 426
        conn = upgraded.connection
        problem = self._auth_problem(request, protocols)
        if problem is not None:
            code, message, close = problem
            conn.send(orjson.dumps(error_event(code, message)))
            await conn.close(close, f"invalid_request_error.{code}".encode())
            return upgraded.response
        if "call_id" in request.query:
            await self.calls.serve_socket(request, conn)
            return upgraded.response
        model = request.query.get("model") or request.query.get("deployment") or ""
        await self._serve(request, conn, model)
        return upgraded.response

    def _refusal(self, request: web.Request) -> web.StreamResponse | None:
        if time.monotonic() >= self.refuse_until:
            return None
        if self.refuse_kind == "connect":
            # Reset the TCP connection before any HTTP answer, as a host that is down would;
            # the response returned is never written (aiohttp drops writes to a closed socket).
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        status = int(self.refuse_kind) if self.refuse_kind.isdigit() else 503
        return web.json_response({"error": {"message": "simulated refusal"}}, status=status)

    def _auth_problem(self, request: web.Request, protocols: list[str]) -> tuple[str | None, str, int] | None:
        key = _key(request, protocols)
        if not key:
            return None, "Missing bearer or basic authentication in header", 3000
        if self.config.api_keys and key not in self.config.api_keys:
            return "invalid_api_key", f"Incorrect API key provided: {key[:3]}***{key[-2:]}.", 3000
        if _wants_beta(request, protocols) and not self._speaks_beta(request):
            return "beta_api_shape_disabled", BETA_DISABLED_MESSAGE, 4000
        model = request.query.get("model") or request.query.get("deployment")
        if not model and request.query.get("intent") != "transcription" and "call_id" not in request.query:
            return (
                "missing_model",
                (
                    "You must provide a model parameter, for example "
                    "wss://api.openai.com/v1/realtime?model=gpt-realtime-1.5"
                ),
                4000,
            )
        if model and model not in self.config.models and not request.path.startswith("/openai/"):
            # Azure names deployments freely; OpenAI only knows its models.
            return "invalid_model", f'Model "{model}" is not supported in realtime mode.', 4000
        return None

    async def _serve(self, request: web.Request, conn: WebSocketConnection, model: str) -> None:
        record: Record | None = None
        probe = self.config.probe

        async def emit(event: dict[str, Any]) -> None:
            assert record is not None
            await record.faults.before_send()
            if conn.closing or record.close_code is not None:
                return
            frame = orjson.dumps(event)
            if not await record.channel.send(frame):
                return  # the peer is gone; the reader sees it and ends
            if probe is not None:
                probe("send", frame)
            fault = record.faults.after_sent(event["type"])
            if fault is not None:
                await self._apply(record, fault)

        def arrived(frame: bytes) -> None:
            assert record is not None
            if probe is not None:
                probe("recv", frame)
            if len(record.raw) < _KEPT_FRAMES:
                record.raw.append(frame[:_KEPT_FRAME_CHARS])

        beta, azure = self._speaks_beta(request), request.path.startswith("/openai/")
        transcription = request.query.get("intent") == "transcription"
        session = SimSession(
            self.config, model, emit, self.script, beta=beta, azure=azure, transcription=transcription
        )
        channel = SimChannel(
            conn, arrived=arrived, take_now=session.append_now, ping_interval_s=self.config.ping_interval_s
        )
        record = Record(session, request.headers.get("X-Relay-Session-Id"), time.time(), channel)
        self._remember(record)
        for configured in self.config.session_faults:
            record.faults.arm(Fault.from_json(dict(configured)))
        if self.new_session_faults:
            record.faults.arm(self.new_session_faults.pop(0))
        expiry = asyncio.create_task(self._expire(record))
        try:
            # Frames the client sends meanwhile wait in the channel, as they would for the API.
            await _pause(self.config.timing.session_created_ms)
            await session.start()
            channel.start()
            await self._read(record)
        finally:
            expiry.cancel()
            await asyncio.gather(expiry, return_exceptions=True)
            await session.close()
            conn.abort()  # a cancelled handler must not leave the socket open
            record.open = False
            # A closed session stays inspectable, but not its audio (only an open session can
            # retrieve it) nor hours of frames: up to max_sessions_kept records must stay small.
            session.input_audio.clear()
            session.input_audio_bytes = 0
            del record.raw[_KEPT_FRAMES_CLOSED:]
            del session.received[_KEPT_FRAMES_CLOSED * 10 :]
            if record.close_code is None:
                record.close_code = conn.close_code

    async def _read(self, record: Record) -> None:
        async for opcode, payload in record.channel.messages():
            if opcode == OP_TEXT:
                await self._handle(record, payload)
            else:
                binary = error_event(
                    "invalid_event", "Expected a text WebSocket message; binary frames are not supported."
                )
                await record.session.reply(binary)  # behind the replies still due, like any answer

    async def _handle(self, record: Record, frame: bytes) -> None:
        """One client frame. The reader is a task root: a simulator bug answers ``server_error``
        for that event, as the live API does, and the session goes on."""
        try:
            await record.session.handle_frame(frame)
        except Exception:
            _log.exception("simulated session %s failed on a client frame", record.session.id)
            await record.session.reply(server_error_event())

    def _remember(self, record: Record) -> None:
        """Keep the record; forget the oldest closed ones beyond the cap (open ones stay)."""
        self.records[record.session.id] = record
        excess = len(self.records) - self.config.max_sessions_kept
        if excess > 0:
            closed = [k for k, r in self.records.items() if not r.open][:excess]
            for key in closed:
                del self.records[key]

    async def _expire(self, record: Record) -> None:
        """The duration cap: ``session_expired`` then close 1001, as the live API (§1.3)."""
        await asyncio.sleep(self.config.session_max_s)
        minutes = round(self.config.session_max_s / 60)
        await self._apply(record, Fault("close", code=1001, reason="session_expired", minutes=minutes))

    async def _apply(self, record: Record, fault: Fault) -> None:
        channel = record.channel
        if fault.kind == "drop":
            record.close_code = 1006
            channel.conn.abort()
        elif fault.kind == "close":
            reason = fault.reason or ""
            if fault.code == 1001 and "expired" in reason:
                minutes = 60 if fault.minutes is None else fault.minutes
                reason = f"Your session hit the maximum duration of {minutes} minutes."
                await channel.send(orjson.dumps(error_event("session_expired", reason)))
            code = fault.code or 1000
            record.close_code = code
            await channel.conn.close(code, reason.encode()[:120])
        elif fault.kind == "server_error":
            await channel.send(orjson.dumps(server_error_event()))
        elif fault.kind == "stall":
            channel.stall(fault.seconds)
        else:
            record.faults.arm_now(fault)

    def _speaks_beta(self, request: web.Request) -> bool:
        """Beta shapes: the beta interface, or Azure's preview URL (``/openai/realtime``)."""
        if self.config.interface == "beta":
            return _wants_beta(request, _protocols(request))
        return self.config.interface == "azure-preview" or request.path == "/openai/realtime"

    # ------------------------------------------------------------------ control API
    async def list_sessions(self, request: web.Request) -> web.Response:
        wanted = request.query.get("relay_session")
        sessions = [
            {
                "id": sid,
                "relay_session": r.relay_session,
                "open": r.open,
                "created_at": r.created_at,
                "interface": self.config.interface,
            }
            for sid, r in self.records.items()
            if wanted is None or r.relay_session == wanted
        ]
        return web.json_response({"sessions": sessions})

    async def get_session(self, request: web.Request) -> web.Response:
        record = self.records.get(request.match_info["id"])
        if record is None:
            raise web.HTTPNotFound(text="no such session")
        body = record.session.snapshot()
        received = [raw.decode("utf-8", "replace") for raw in record.raw]
        body.update(open=record.open, received=received, close_code=record.close_code)
        return web.json_response(body)

    async def session_fault(self, request: web.Request) -> web.Response:
        record = self.records.get(request.match_info["id"])
        if record is None or not record.open:
            raise web.HTTPNotFound(text="no such open session")
        fault = _fault(await _json_body(request))
        if fault.after_event:
            record.faults.arm(fault)
        else:
            await self._apply(record, fault)
        return web.json_response({"ok": True})

    async def global_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if body.get("clear"):
            self.refuse_until = 0.0
            self.new_session_faults.clear()
        elif "next_sessions" in body:  # e.g. drop the next new session mid-replay
            fault = _fault(body.get("fault"))
            self.new_session_faults += [fault] * int(body["next_sessions"])
        elif "refuse" in body:
            self.refuse_kind = str(body["refuse"])
            self.refuse_until = time.monotonic() + float(body.get("seconds", 5))
        return web.json_response({"ok": True})

    async def set_script(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        self.script.replies.extend(body.get("replies") or [])
        self.script.transcripts.extend(body.get("transcripts") or [])
        self.script.transcription_failures += int(body.get("transcription_failures", 0))
        if "tool_arguments" in body:
            self.script.arguments = orjson.dumps(body["tool_arguments"]).decode()
        return web.json_response({"ok": True})


async def _json_body(request: web.Request) -> dict[str, Any]:
    # application/json only: a web page can POST text/plain across origins without asking first
    # (no CORS preflight), so accepting it would let any page steer a local simulator.
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="expected Content-Type: application/json")
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


def _fault(body: Any) -> Fault:
    try:
        return Fault.from_json(body)
    except (ValueError, TypeError, AttributeError) as exc:
        raise web.HTTPBadRequest(text=f"bad fault: {exc}") from None


async def _pause(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def _protocols(request: web.Request) -> list[str]:
    return [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]


def _wants_beta(request: web.Request, protocols: list[str]) -> bool:
    return request.headers.get("OpenAI-Beta") == BETA_HEADER_VALUE or BETA_SUBPROTOCOL in protocols


def _key(request: web.Request, protocols: list[str]) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    if request.headers.get("api-key"):
        return request.headers["api-key"]
    if request.query.get("api-key"):
        return request.query["api-key"]
    for protocol in protocols:
        if protocol.startswith(_TOKEN_PREFIX):
            return protocol[len(_TOKEN_PREFIX) :]
    return None


def create_simulator_app(config: SimulatorConfig) -> web.Application:
    simulator = Simulator(config)
    app = web.Application()
    app.on_shutdown.append(simulator.shut_down)
    for path in ("/v1/realtime", "/openai/v1/realtime", "/openai/realtime"):
        app.router.add_get(path, simulator.realtime)
    for path in ("/v1/realtime/calls", "/openai/v1/realtime/calls"):
        app.router.add_post(path + "/{call_id}/{action:accept|reject|refer|hangup}", simulator.calls.action)
    if config.control_api:
        app.router.add_get("/_sim/sessions", simulator.list_sessions)
        app.router.add_get("/_sim/sessions/{id}", simulator.get_session)
        app.router.add_post("/_sim/sessions/{id}/fault", simulator.session_fault)
        app.router.add_post("/_sim/faults", simulator.global_fault)
        app.router.add_post("/_sim/script", simulator.set_script)
        app.router.add_post("/_sim/calls", simulator.calls.create)
        app.router.add_get("/_sim/calls/{call_id}", simulator.calls.inspect)
        app.router.add_post("/_sim/calls/{call_id}/caller", simulator.calls.caller)
    return app


async def start_simulator(
    config: SimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve the simulator (``wss://`` with ``ssl_context``); returns its runner and port."""
    runner = web.AppRunner(create_simulator_app(config), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


def run_simulator(config: SimulatorConfig, host: str, port: int) -> None:
    web.run_app(create_simulator_app(config), host=host, port=port, print=None)
