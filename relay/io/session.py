"""One relay session: a client WebSocket and the succession of upstream sessions behind it.

The session owns its tasks (client reader, upstream reader, housekeeping) and cancels and awaits
them on the way out. Each direction forwards the frame's bytes as received: the relay parses a
client event to validate it but re-serialises only what it changed (policy, beta translation).
Reading is sequential per socket and every send awaits the transport's drain, so a slow receiver
stops the relay reading from the sender (TCP backpressure) instead of growing a buffer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from relay.core.beta_translator import BetaTranslator
from relay.core.errors import HoldOverflow, InvalidEvent, RelayError, UpstreamError, new_id
from relay.core.gate import ReadinessGate
from relay.core.protocol import event_type_label
from relay.io import upstream as upstream_mod
from relay.io.context import RelayContext
from relay.io.frames import delta_chars, dumps, event_type_of, peek_type
from relay.io.inbound import ClientEventChecker
from relay.io.link import UpstreamLink
from relay.io.supervisor import Supervisor
from relay.observability.logging import get_logger

C2U = "client_to_upstream"
UNREACHABLE_READINESS_S = 10.0  # /readyz answers 503 this long after a failed upstream connect
U2C = "upstream_to_client"
_BINARY_MESSAGE = "Expected a text WebSocket message; binary frames are not supported."


class ClientGone(Exception):
    """The client closed or stopped reading for longer than allowed."""


class RelaySession:
    """Bridges one client connection to upstream Realtime sessions."""

    def __init__(
        self,
        ctx: RelayContext,
        client: web.WebSocketResponse,
        *,
        session_id: str,
        identity_key: str,
        model: str,
        beta: BetaTranslator | None = None,
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.id = session_id
        self.model = model
        self.identity_key = identity_key
        self.settings = ctx.settings
        self.metrics = ctx.metrics
        self.log = get_logger(relay_session=session_id, client=identity_key, model=model)
        self.gate = ReadinessGate(
            max_events=self.settings.hold_max_events,
            max_bytes=self.settings.hold_max_bytes,
            timeout_s=self.settings.hold_timeout_s,
        )
        self.beta = beta  # set for a beta client translated to a GA upstream
        self.checker = ClientEventChecker(ctx.settings, ctx.upstreams.interface, beta)
        self.link: UpstreamLink | None = None
        self.outcome = "client_closed"
        self.started = time.monotonic()
        self._room = asyncio.Event()
        self._room.set()
        self._upstream_changed = asyncio.Event()
        self._stuck_timeout = self.settings.stuck_peer_timeout_s
        self._client_send_since = 0.0  # when a send still in progress started (0: none)
        self._upstream_send_since = 0.0
        self._closing = False
        self.supervisor = Supervisor(self)

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        self.metrics.sessions_active.inc()
        self.log.info("session_started")
        try:
            await self._run()
        finally:
            self.metrics.sessions_active.dec()
            self.metrics.sessions_total.labels(self.outcome).inc()
            self.log.info(
                "session_ended",
                outcome=self.outcome,
                duration_s=round(time.monotonic() - self.started, 3),
            )

    async def _run(self) -> None:
        try:
            self.link = await self.open_link()
        except UpstreamError as exc:
            await self._fail(exc)
            return
        tasks = [
            asyncio.create_task(self._client_loop(), name=f"{self.id}:client"),
            asyncio.create_task(self._upstream_loop(), name=f"{self.id}:upstream"),
            asyncio.create_task(self._housekeeping(), name=f"{self.id}:housekeeping"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    await self._task_failed(task.exception())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close_all()

    async def _task_failed(self, exc: BaseException | None) -> None:
        if isinstance(exc, RelayError):
            await self._fail(exc)
        elif isinstance(exc, ConnectionResetError):
            self.outcome = "client_closed"  # the client went away while the relay was writing to it
        elif isinstance(exc, ClientGone):
            self.outcome = "client_stuck"
            _abort(self.client)  # a peer that stopped reading cannot take a close frame either
        elif exc is not None:
            self.log.error("session_crashed", error=repr(exc))
            await self._fail(RelayError("the relay hit an internal error"))

    async def _fail(self, exc: RelayError) -> None:
        """Tell the client what failed (OpenAI-shaped error), then close with the error's code."""
        self.outcome = getattr(exc, "code", None) or "error"
        self.log.warning("session_failed", code=exc.code, close_code=exc.close_code, reason=exc.message)
        if not self.client.closed:
            try:
                await self.send_client_event(exc.to_event())
                await self.client.close(code=exc.close_code, message=exc.message[:120].encode())
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                pass

    async def shutdown(self, code: int = 1001, message: str = "the relay is shutting down") -> None:
        """Close the client (draining): the client's reader then ends the session."""
        self.outcome = "drained"
        self._closing = True
        if not self.client.closed:
            await self.client.close(code=code, message=message.encode())

    async def _close_all(self) -> None:
        self._closing = True
        if self.link is not None:
            await self.link.close(1000)
        if not self.client.closed:
            await self.client.close()

    # ------------------------------------------------------------------ upstream links
    async def open_link(self) -> UpstreamLink:
        """Connect a new upstream session (not yet the current one)."""
        target = await self.ctx.upstreams.target(self.model, self.id)
        provider = target.provider
        try:
            ws = await upstream_mod.connect(self.ctx.http, target, self.settings)
        except UpstreamError as exc:
            self.metrics.upstream_connects_total.labels(provider, exc.code or "error").inc()
            self.log.warning("upstream_connect_failed", code=exc.code, status=exc.status)
            if exc.code == "upstream_unreachable":
                self.ctx.upstream_unreachable_until = time.monotonic() + UNREACHABLE_READINESS_S
            raise
        self.ctx.upstream_unreachable_until = 0.0
        self.metrics.upstream_connects_total.labels(provider, "ok").inc()
        link = UpstreamLink(ws, target, time.monotonic())
        link.set_write_buffer_limits(self.settings.send_high_water_bytes, self.settings.send_low_water_bytes)
        self.log.info("upstream_connected", provider=provider)
        return link

    async def _upstream_loop(self) -> None:
        """Forward the current upstream's frames; when it closes, the supervisor replaces it."""
        while True:
            link = self.link
            assert link is not None
            await self._pump_upstream(link)
            if self._closing or self.client.closed:
                return
            if link is not self.link or link.closed_by_relay:
                continue  # a rotation switched to a new upstream and closed this one
            self.log.info("upstream_closed", code=link.close_code, error_code=link.last_error_code)
            await self.supervisor.recover(link)

    async def _pump_upstream(self, link: UpstreamLink) -> None:
        async for msg in link.ws:
            if msg.type is WSMsgType.TEXT:
                await self.on_upstream_text(link, msg.data)
            elif msg.type is WSMsgType.BINARY:  # the API sends none; pass through untouched
                await self._send_client_frame(msg.data, WSMsgType.BINARY)

    async def on_upstream_text(self, link: UpstreamLink, data: bytes) -> None:
        received = time.perf_counter()
        event_type, event = event_type_of(data)
        if event_type not in _UNTRACKED_SERVER_TYPES:
            event = event if event is not None else _loads(data)
            shown = self.on_server_event(link, event_type, event, data)
            if shown is None:
                return
            if shown is not data:
                event = None  # changed on the way: translate from the bytes actually shown
            data = shown
        else:
            self.supervisor.state.on_audio_delta(delta_chars(data))
        if self.beta is not None:
            beta = self.beta.server_bytes_to_beta(data, event)
            if beta is None:
                await self._after_server_event(event_type)
                return
            data = beta
        await self._send_client_frame(data, WSMsgType.TEXT)
        self.metrics.frame(U2C, event_type_label(event_type), len(data))
        self.metrics.latency_upstream_to_client.observe(time.perf_counter() - received)
        await self._after_server_event(event_type)

    async def _after_server_event(self, event_type: str) -> None:
        if event_type in _RELEASING_SERVER_TYPES:
            await self.release_held()

    def on_server_event(
        self, link: UpstreamLink, event_type: str, event: dict[str, Any], data: bytes
    ) -> bytes | None:
        """Track what the relay must know from a server event; returns the frame to forward."""
        shown = self.supervisor.on_server_event(event_type, event, data)
        if shown is None:
            return None
        data = shown
        self.gate.on_server_event(event_type, event)
        self.checker.on_server_event(event_type, event)
        if event_type == "session.created":
            session = event.get("session")
            link.session_id = session.get("id") if isinstance(session, dict) else None
            link.created.set()
        elif event_type == "error":
            error = event.get("error")
            if isinstance(error, dict):
                link.last_error_code = error.get("code")
                return self._scrub_error(event, data)
        return data

    def _scrub_error(self, event: dict[str, Any], data: bytes) -> bytes:
        """The API's invalid_api_key message quotes part of the key: never pass that on."""
        error = event["error"]
        if error.get("code") == "invalid_api_key" or b"sk-" in data:
            error["message"] = "The relay's upstream credentials were rejected by the provider."
            return dumps(event)
        return data

    # ------------------------------------------------------------------ client side
    async def _client_loop(self) -> None:
        async for msg in self.client:
            if msg.type is WSMsgType.TEXT:
                await self.on_client_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await self.send_client_event(_binary_frame_error())
                self.metrics.validation_rejections_total.labels("invalid_event").inc()
        self._closing = True

    async def on_client_text(self, data: bytes) -> None:
        received = time.perf_counter()
        try:
            checked = self.checker.check(data)
        except InvalidEvent as exc:
            self.metrics.validation_rejections_total.labels(exc.code or "invalid").inc()
            self.log.info("event_rejected", code=exc.code, param=exc.param)
            await self.send_client_event(exc.to_event())
            return
        self._report_dropped_beta_fields()
        for frame, event_type, event in checked:
            await self.forward_upstream(frame, event_type, event)
            self.metrics.frame(C2U, event_type_label(event_type), len(frame))
        self.metrics.latency_client_to_upstream.observe(time.perf_counter() - received)

    async def forward_upstream(self, data: bytes, event_type: str, event: dict[str, Any] | None) -> None:
        """Send now, or hold until the upstream is ready (order is always kept)."""
        if self.gate.must_hold(event_type) or self.link is None:
            await self._hold(data, event_type)
            return
        if not await self._send_upstream(self.link, data):
            self.gate.requeue(data, event_type, time.monotonic())  # kept for the next upstream
            return
        self.gate.sent(event, event_type)
        self.supervisor.on_client_event(event, data)

    async def send_now(
        self, link: UpstreamLink, data: bytes, event_type: str, event: dict[str, Any] | None
    ) -> None:
        """Send ahead of anything held (for events that were sent before the held ones)."""
        if not await self._send_upstream(link, data):
            self.gate.requeue(data, event_type, time.monotonic())
            return
        self.gate.sent(event, event_type)
        self.supervisor.on_client_event(event, data)

    async def _hold(self, data: bytes, event_type: str) -> None:
        if not self.gate.has_room():
            # Backpressure: stop reading the client until held frames drain.
            self.metrics.backpressure_pauses_total.labels(C2U).inc()
            self._room.clear()
            await self._room.wait()
        self.gate.hold(data, event_type, time.monotonic())
        self._held_metrics()

    async def release_held(self) -> None:
        """Send every held frame the gate now allows, in order."""
        link = self.link
        while link is not None and (frame := self.gate.releasable()) is not None:
            if not await self._send_upstream(link, frame.data):
                self.gate.requeue(frame.data, frame.event_type, frame.held_at)
                break
            event = _loads(frame.data)
            self.gate.sent(event, frame.event_type)
            self.supervisor.on_client_event(event, frame.data)
        self._held_metrics()
        if self.gate.has_room():
            self._room.set()

    def _held_metrics(self) -> None:
        self.metrics.held_events.set(self.gate.held_count)
        self.metrics.held_bytes.set(self.gate.held_bytes)

    # ------------------------------------------------------------------ sending
    async def _send_upstream(self, link: UpstreamLink, data: bytes) -> bool:
        """Send one frame; False when the upstream is already closing (the frame was not sent).

        The upstream reader sees the close and the supervisor replaces the upstream; the caller
        puts the frame back at the head of the hold so it goes to the replacement, in order.
        """
        # A timestamp, not asyncio.timeout(): this runs per frame, and the housekeeping task
        # already wakes regularly to notice a send that has been stuck too long.
        self._upstream_send_since = time.monotonic()
        try:
            await link.send(data)
        except ConnectionResetError:
            self.gate.upstream_lost()
            return False
        finally:
            self._upstream_send_since = 0.0
        return True

    async def _send_client_frame(self, data: bytes, kind: WSMsgType) -> None:
        self._client_send_since = time.monotonic()
        await self.client.send_frame(data, kind)
        self._client_send_since = 0.0

    async def send_client_event(self, event: dict[str, Any]) -> None:
        if self.beta is not None:
            translated = self.beta.server_to_beta(event)
            if translated is None:
                return
            event = translated
        await self._send_client_frame(dumps(event), WSMsgType.TEXT)

    def _report_dropped_beta_fields(self) -> None:
        if self.beta is None or not self.beta.dropped_fields:
            return
        for field in self.beta.dropped_fields:
            self.metrics.beta_dropped_fields_total.labels(field).inc()
        self.log.warning("beta_fields_dropped", fields=self.beta.dropped_fields)
        self.beta.dropped_fields = []

    # ------------------------------------------------------------------ housekeeping
    async def _housekeeping(self) -> None:
        """Hold timeouts and stuck peers; the supervisor adds rotation."""
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            try:
                self.gate.check_timeout(now)
            except HoldOverflow:
                self.log.warning("hold_timeout", held_events=self.gate.held_count)
                raise
            self._check_stuck(now)
            if self.link is not None and self.supervisor.rotation_due(now):
                await self.supervisor.rotate()

    def _check_stuck(self, now: float) -> None:
        limit = self._stuck_timeout
        if self._client_send_since and now - self._client_send_since > limit:
            self.log.warning("client_stuck", timeout_s=limit)
            raise ClientGone
        if self._upstream_send_since and now - self._upstream_send_since > limit:
            raise UpstreamError(
                f"the upstream stopped reading for {limit:g} s",
                retryable=True,
                code="upstream_stuck",
            )


# Audio deltas are most of the server's frames and carry nothing the session state needs.
_UNTRACKED_SERVER_TYPES = frozenset({"response.output_audio.delta", "response.audio.delta"})
_RELEASING_SERVER_TYPES = frozenset({"session.created", "session.updated", "error"})


def _abort(ws: web.WebSocketResponse) -> None:
    transport = getattr(getattr(ws, "_writer", None), "transport", None)
    if transport is not None:
        transport.abort()


def _loads(data: bytes) -> dict[str, Any]:
    import orjson

    value = orjson.loads(data)
    return value if isinstance(value, dict) else {}


def _binary_frame_error() -> dict[str, Any]:
    from relay.core.errors import error_event

    return error_event("invalid_event", _BINARY_MESSAGE)


__all__ = ["RelaySession", "new_id", "peek_type"]
