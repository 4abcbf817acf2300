"""One conversation: the succession of upstream sessions behind an app, and the app's connection.

The conversation owns the upstream links, the supervisor, the session state and the resume log;
the app's connection is attached to it (``relay.io.attachment``) and may drop and come back
(resume) while the conversation goes on, for a grace period.

Frames are forwarded from the sockets' own callbacks, synchronously: a client frame is parsed,
checked and written upstream before the next one is read, with no task switch or await on the
way (this path runs ~50 times a second per voice session). Each direction forwards the frame's
bytes as received; the relay re-serialises only what it changed (policy, beta translation).

Backpressure is the transports': when one side's send buffer passes its high-water mark the
relay stops reading the other side until it drains, and when the hold is full it stops reading
the client. Nothing is dropped and memory stays bounded.

The conversation owns its tasks (housekeeping, recovery, rotation) and cancels and awaits them
on the way out. Anything that ends it (the client leaving for good, a fatal upstream failure, a
stuck peer, the resume grace running out, a bug in a callback) resolves one future, and
:meth:`run` reports it to the client, if one is attached.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Coroutine
from typing import Any

import orjson

from relay.core.beta_translator import BetaTranslator
from relay.core.calls import CallFormats
from relay.core.errors import HoldOverflow, InvalidEvent, RelayError, UpstreamError, error_event, new_id
from relay.core.gate import ReadinessGate
from relay.core.ratelimit import TokenBucket
from relay.core.redaction import redact_text
from relay.core.replayed import ITEM_EVENTS
from relay.core.resume import ResumeBufferFull, ResumeCredential, SeenClientEvents, SentLog
from relay.core.snapshot import Snapshot, capture, keep_partial_output, restore, unfinished_response
from relay.core.websocket import OP_BINARY, OP_TEXT
from relay.io import upstream as upstream_mod
from relay.io.attachment import DetachedClient, ended_on_purpose
from relay.io.budgets import SessionUsage
from relay.io.context import RelayContext
from relay.io.frames import delta_chars, dumps, event_type_of, peek_type
from relay.io.inbound import ClientEventChecker
from relay.io.lanes import AppendLane, DeltaLane
from relay.io.link import UpstreamLink
from relay.io.session_store import Pending
from relay.io.supervisor import Supervisor
from relay.io.websocket import WebSocketConnection, batch
from relay.observability.logging import get_logger

C2U = "client_to_upstream"
UNREACHABLE_READINESS_S = 10.0  # /readyz answers 503 this long after a failed upstream connect
U2C = "upstream_to_client"
_BINARY_MESSAGE = "Expected a text WebSocket message; binary frames are not supported."
# Errors the relay itself sends one client: plenty for any app's mistakes, bounded for a flood.
ERRORS_PER_SECOND = 20.0
ERROR_BURST = 50.0


class ClientGone(Exception):
    """The client stopped reading, or stopped answering pings, for longer than allowed."""


class Conversation:
    """Bridges an app (attached, or away for a while) to upstream Realtime sessions."""

    def __init__(
        self,
        ctx: RelayContext,
        *,
        session_id: str,
        identity_key: str,
        model: str | None,
        intent: str = "realtime",
        beta: BetaTranslator | None = None,
        usage: SessionUsage | None = None,
        call: CallFormats | None = None,
        call_id: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.client: WebSocketConnection | DetachedClient = DetachedClient()
        self.id = session_id
        self.model = model
        self.intent = intent  # "transcription": transcripts only, no conversation, no responses
        self.identity_key = identity_key
        self.usage = usage  # tokens and cost from the API's own accounting; budgets
        self.settings = ctx.settings
        self.metrics = ctx.metrics
        self.log = get_logger(relay_session=session_id, client=identity_key, model=model or intent)
        self.gate = ReadinessGate(
            max_events=self.settings.hold_max_events,
            max_bytes=self.settings.hold_max_bytes,
            timeout_s=self.settings.hold_timeout_s,
        )
        self.beta = beta  # set for a beta client translated to a GA upstream
        # A phone call's control socket (?call_id=): the call's G.711 formats are pinned, and its
        # session, which lives on at the API, is reattached rather than replaced or replayed.
        self.call_id = call_id
        self.checker = ClientEventChecker(ctx.settings, ctx.upstreams.interface, beta, intent, call)
        self.checker.input_audio.on_split_sample = self._split_sample
        self._split_samples = 0
        self._error_budget = TokenBucket(ERRORS_PER_SECOND, ERROR_BURST)
        self._suppressed_logged_at = 0.0
        self._link: UpstreamLink | None = None
        self.outcome = "client_closed"
        self.started = time.monotonic()
        self._ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.supervisor = Supervisor(self)
        settings = self.settings
        self.sent = SentLog(
            window_bytes=settings.resume_window_bytes,
            window_frames=settings.resume_window_events,
            max_bytes=settings.resume_buffer_bytes,
            max_frames=settings.resume_buffer_events,
        )
        self.credential = ResumeCredential(session_id, identity_key)
        self.seen = SeenClientEvents()
        self.detached_at: float | None = None
        self.resumable = settings.resume_grace_s > 0
        self._notify_resume = False
        # Shared state (RELAY_REDIS_URL): what the store has of this conversation.
        self.store = ctx.store
        self.store_fence = 0  # 0: not registered in the store yet
        self._stored_version: tuple[int, bytes] | None = None
        self._state_version = 0  # raised by the server events that change what a snapshot holds
        self._log_pushed = 0  # frames of the resume log written, while the client is away
        self._log_clear = False
        self._taking_over = False  # restored from the store: replay onto a new upstream first
        self._told_unreadable = False  # an upstream frame that was not JSON was logged
        self._ask_again: dict[str, Any] | None = None  # a response the old process cut unheard
        self._moved = False  # parked for, or taken over by, another process
        self._client_close = (1001, b"")

    @classmethod
    def restored(
        cls,
        ctx: RelayContext,
        snapshot: Snapshot,
        frames: list[bytes],
        fence: int,
        *,
        beta: BetaTranslator | None,
        usage: SessionUsage | None,
        call: CallFormats | None,
    ) -> Conversation:
        """A conversation another process held, taken over for its resuming client: the state is
        the snapshot's, the resume log the events the client may not have seen, and its first
        upstream is prepared like a replacement (connect, replay) before anything is forwarded."""
        conversation = cls(
            ctx,
            session_id=snapshot.session_id,
            identity_key=snapshot.identity_key,
            model=snapshot.model,
            intent=snapshot.intent,
            beta=beta,
            usage=usage,
            call=call,
            call_id=snapshot.call_id,
        )
        restore(conversation.supervisor.state, snapshot)
        conversation.supervisor.first_session_id = snapshot.first_session_id
        conversation.checker.on_server_event("session.updated", {"session": snapshot.config})
        conversation.credential.adopt(snapshot.digest)
        conversation.seen.remember_items([str(item["id"]) for item in snapshot.items])
        conversation.sent.detach()
        for frame in frames:
            conversation.sent.append(frame)
        done = unfinished_response(frames, snapshot)
        if done is not None:  # its old process died mid-answer: the answer ends here, once
            keep_partial_output(conversation.supervisor.state, done)
            conversation.sent.append(dumps(done))
        conversation.detached_at = time.monotonic()
        conversation.store_fence = fence
        conversation._taking_over = True
        conversation._ask_again = snapshot.ask_again
        return conversation

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        self.metrics.sessions_active.inc()
        self.log.info("session_taken_over" if self._taking_over else "session_started")
        if self._taking_over:
            self._count_detached()  # it waits for its client from the start
        if self.store is not None:
            self.store.keep(self)
        try:
            await self._run()
        finally:
            if self.store is not None and not self._moved:  # ended for good: nothing to resume
                await self.store.delete(self.id, self.store_fence)
            if self.detached_at is not None:  # ended while waiting for its client
                self.detached_at = None
                self._count_detached()
            self._let_go()
            self.metrics.sessions_active.dec()
            self.metrics.sessions_total.labels(self.outcome).inc()
            self.log.info(
                "session_ended",
                outcome=self.outcome,
                duration_s=round(time.monotonic() - self.started, 3),
                **({"usage": self.usage.summary()} if self.usage is not None else {}),
            )

    def _let_go(self) -> None:
        """Cut the audio check's callback into this ended session, so reference counting frees
        it when the registry lets go (its connections drop their callbacks themselves when their
        sockets are gone). As a cycle it would wait for a full collection, which stops every
        session on the process for each object it walks (relay.observability.gc_pauses)."""
        self.checker.input_audio.on_split_sample = _no_split_report

    async def _run(self) -> None:
        self.ctx.ticker.join(self)
        try:
            # A task the conversation owns: a client that leaves while the first upstream is
            # still being prepared (a takeover's replay takes a while) ends it at once.
            self.spawn(self._first_upstream(), "first upstream")
            failure = await self._ended
            if failure is not None:
                await self._report(failure)
        finally:
            self._closing = True
            self.ctx.ticker.leave(self)
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close_all()

    async def _first_upstream(self) -> None:
        try:
            if self._taking_over:
                await self.supervisor.take_over(self._ask_again)
            else:
                self.attach(await self.open_link())
        except UpstreamError as exc:
            self.end(exc)

    def end(self, failure: BaseException | None) -> None:
        """End the session (the first call wins); ``failure`` is reported to the client."""
        if not self._ended.done():
            self._ended.set_result(failure)

    # ------------------------------------------------------------------ the app's connection
    def attach_client(self, conn: WebSocketConnection, *, last_event_id: str | None = None) -> None:
        """Attach the app's connection: the first one, or a resume's (then everything after the
        event the app processed last goes out first, once, in order)."""
        previous, self.client = self.client, conn
        if isinstance(previous, WebSocketConnection):  # came back before its old socket was seen gone
            previous.on_failure = _ignore_failure
            previous.abort()
        resumed = self.detached_at is not None or isinstance(previous, WebSocketConnection)
        self.detached_at = None
        # Read the client from the start: events sent while the upstream connects are checked
        # and held (bounded, with backpressure), not left to pile up unread.
        conn.set_handler(self.on_client_message)
        conn.lane = AppendLane(self)  # the 20 ms append in one step (relay.io.lanes)
        conn.on_failure = self.end
        conn.on_write_paused = self._client_write_paused
        conn.closed.add_done_callback(functools.partial(self._client_closed, conn))
        if resumed:
            self.seen.resumed(time.monotonic())
            backlog, found = self.sent.after(last_event_id)
            with batch():  # the backlog in one write, not one per event
                for frame in backlog:
                    conn.send(frame)
            self.metrics.resumes_total.labels("ok" if found or not len(self.sent) else "gap").inc()
            self.log.info("client_resumed", replayed_events=len(backlog), last_event_found=found)
        self.sent.attach()
        self._log_clear = True  # an attached client's events are not written to the store
        self._count_detached()
        if link := self.link:
            link.conn.resume_reading("client")  # whatever paused it was the old connection's

    def notify_resume(self, token: str) -> None:
        """The opt-in event that hands a browser its resume token (SDKs ignore unknown types)."""
        self._notify_resume = True
        event = {
            "type": "relay.session_resumable",
            "event_id": new_id("event_"),
            "session_id": self.id,
            "resume_token": token,
            "grace_s": self.settings.resume_grace_s,
        }
        self.client.send(dumps(event))  # not in the resume log: a resume gets a fresh token

    def _client_closed(self, conn: WebSocketConnection, _: object) -> None:
        if conn is not self.client:
            return  # an old connection, already replaced by a resume
        if self._closing or not self.resumable or ended_on_purpose(conn.close_code):
            self.end(None)
            return
        self.client = DetachedClient()
        self.detached_at = time.monotonic()
        self.sent.detach()
        self._log_clear, self._log_pushed = True, 0  # the store gets the whole log from here on
        self.metrics.client_detached_total.inc()
        self._count_detached()
        self.log.info("client_detached", close_code=conn.close_code, grace_s=self.settings.resume_grace_s)
        if link := self.link:
            link.conn.resume_reading("client")  # nothing is read: answers go to the resume log
        if self.settings.resume_cancel_responses and self.supervisor.state.active_response is not None:
            self.supervisor.cancel_response()

    def _count_detached(self) -> None:
        self.metrics.detached_sessions.set(self.ctx.registry.note_detached(self))

    @property
    def link(self) -> UpstreamLink | None:
        """The current upstream; None while there is none (a recovery between two)."""
        return self._link

    @link.setter
    def link(self, link: UpstreamLink | None) -> None:
        self._link = link
        lane = self.client.lane if isinstance(self.client, WebSocketConnection) else None
        if isinstance(lane, AppendLane):
            lane.relink(link)  # it sends to the link's connection itself

    @property
    def detached(self) -> bool:
        return self.detached_at is not None

    @property
    def ended(self) -> bool:
        return self._closing or self._ended.done()

    def to_client(self, data: bytes) -> None:
        """Every server frame for the app: kept for a resume, sent if it is attached."""
        try:
            self.sent.append(data)
        except ResumeBufferFull as exc:
            self.outcome = "resume_buffer_full"
            self.metrics.resumes_total.labels("buffer_full").inc()
            self.log.warning("resume_buffer_full", detail=str(exc))
            self.end(None)
            return
        self.client.send(data)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``coro`` as a task the session owns; its failure ends the session."""
        task = asyncio.create_task(coro, name=f"{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.end(task.exception())

    async def _report(self, exc: BaseException) -> None:
        if self.detached:
            self.outcome = getattr(exc, "code", None) or "error"
            self.log.warning("session_failed_while_detached", error=repr(exc))
            return
        if isinstance(exc, RelayError):
            await self._fail(exc)
        elif isinstance(exc, ClientGone):
            self.outcome = "client_stuck"
            self.client.abort()  # a peer that stopped reading cannot take a close frame either
        else:
            self.log.error("session_crashed", error=repr(exc))
            await self._fail(RelayError("the relay hit an internal error"))

    async def _fail(self, exc: RelayError) -> None:
        """Tell the client what failed (OpenAI-shaped error), then close with the error's code."""
        self.outcome = getattr(exc, "code", None) or "error"
        self.log.warning("session_failed", code=exc.code, close_code=exc.close_code, reason=exc.message)
        self.send_client_event(exc.to_event())
        await self.client.close(exc.close_code, redact_text(exc.message).encode())

    async def shutdown(self, code: int = 1001, message: str = "the relay is shutting down") -> None:
        """Close the client (draining); the session then ends."""
        self.outcome = "drained"
        self._closing = True
        if self.detached:  # no connection whose close would end it
            self.end(None)
            return
        await self.client.close(code, message.encode())

    async def _close_all(self) -> None:
        self._closing = True
        if self.link is not None:
            await self.link.close(1000)
        await self.client.close(*self._client_close)

    # ------------------------------------------------------------------ shared state
    def _snapshot(self, ask_again: dict[str, Any] | None = None) -> Snapshot:
        settings = self.settings
        config, items = capture(
            self.supervisor.state,
            max_items=settings.replay_max_items,
            max_tokens=settings.replay_max_tokens,
            user_audio=settings.replay_user_audio,
        )
        return Snapshot(
            session_id=self.id,
            identity_key=self.identity_key,
            digest=self.credential.digest,
            model=self.model,
            intent=self.intent,
            beta=self.beta is not None,
            call_id=self.call_id,
            first_session_id=self.supervisor.first_session_id,
            config=config,
            items=items,
            active_response=self.supervisor.state.active_response,
            ask_again=ask_again,
        )

    def store_pending(self) -> Pending:
        """What the store's next sync writes: the snapshot when a server event changed the state
        or the credential changed (item and configuration boundaries, never per frame), and
        the resume log only while the client is away."""
        pending = Pending()
        version = (self._state_version, self.credential.digest)
        if version != self._stored_version and self.credential.digest:
            self._stored_version = version
            pending.snapshot = self._snapshot().encode()
        if self._log_clear:
            pending.clear_log, self._log_clear = True, False
        if self.detached:
            pending.frames = self.sent.frames_from(self._log_pushed)
            self._log_pushed += len(pending.frames)
        return pending

    def store_registered(self) -> None:
        """The store has (again) only this conversation's lease: write everything."""
        self._stored_version = None
        self._log_clear, self._log_pushed = True, 0

    def taken_over(self) -> None:
        """Another process took this conversation over (this one stalled, or lost Redis for
        longer than its lease): this copy ends, without touching the new owner's state."""
        if self.ended:
            return
        self._moved = True
        self.outcome = "taken_over"
        self.metrics.sessions_moved_total.labels("taken_over").inc()
        self.log.warning("session_taken_over_elsewhere")
        self._client_close = (1012, b"the session moved to another relay process; resume it")
        self.end(None)

    def release_requested(self) -> None:
        """The client came back on another process: let the conversation go there."""
        if not self.ended and not self._moved:
            self.spawn(self.park("released"), "park")

    async def park(self, reason: str) -> bool:
        """Write the conversation's last state and log to the store, let go of it, and end this
        copy (a draining process, or another process asked). The client, if attached, is closed
        with 1012: the SDKs reconnect on it and resume wherever they land. False when there is
        no store to park in (or it failed): the conversation is then ended the usual way."""
        store = self.store
        if store is None or self.ended or self._moved or not self.store_fence:
            return False
        self._moved = True
        # Nothing may reach the client after the state is taken: it would be missing from the log.
        self.client.pause_reading("park")
        if link := self.link:
            link.conn.pause_reading("park")
            self.link = None
        cut = self.supervisor.interrupt_response()
        if cut.done is not None:  # the response cannot carry on elsewhere: the client sees it end
            self.send_client_event(cut.done)
        # Unheard or not started: the process that takes it over asks again.
        snapshot = self._snapshot(ask_again=cut.again)
        pending = Pending(snapshot.encode(), self.sent.frames_from(0), clear_log=True)
        parked = await store.park(self.id, self.store_fence, pending)
        if link is not None:
            self.link = link  # closed with the conversation
        if not parked:
            self._moved = False
            self.client.resume_reading("park")
            if link is not None:
                link.conn.resume_reading("park")
            self.log.warning("session_park_failed", reason=reason)
            return False
        self.outcome = "moved"
        self.metrics.sessions_moved_total.labels(reason).inc()
        self.log.info("session_parked", reason=reason, log_events=len(pending.frames))
        self._client_close = (1012, b"the session moved; resume it")
        self.end(None)
        return True

    # ------------------------------------------------------------------ upstream links
    async def open_link(self) -> UpstreamLink:
        """Connect a new upstream session (not yet the current one: it collects its frames)."""
        target = await self.ctx.upstreams.target(
            self.model, self.id, intent=self.intent, call_id=self.call_id
        )
        provider = target.provider
        try:
            conn = await upstream_mod.connect(target, self.settings)
        except UpstreamError as exc:
            self.metrics.upstream_connects_total.labels(provider, exc.code or "error").inc()
            self.log.warning("upstream_connect_failed", code=exc.code, status=exc.status)
            if exc.code == "upstream_unreachable":
                self.ctx.upstream_unreachable_until = time.monotonic() + UNREACHABLE_READINESS_S
            raise
        self.ctx.upstream_unreachable_until = 0.0
        self.metrics.upstream_connects_total.labels(provider, "ok").inc()
        link = UpstreamLink(conn, target, time.monotonic())
        link.set_write_buffer_limits(self.settings.send_high_water_bytes, self.settings.send_low_water_bytes)
        conn.on_failure = self.end
        conn.closed.add_done_callback(lambda _: self._upstream_closed(link))
        self.log.info("upstream_connected", provider=provider)
        return link

    def attach(self, link: UpstreamLink) -> None:
        """Make ``link`` the current upstream: its frames go to the client from now on."""
        previous, self.link = self.link, link
        if previous is not None and previous is not link:
            previous.detach()
        link.attach(functools.partial(self._on_upstream_message, link), self._upstream_write_paused)
        link.conn.lane = DeltaLane(self, link)  # audio and text deltas in one step (relay.io.lanes)
        self.client.resume_reading("upstream")  # the new upstream's send buffer is empty
        if self.client.write_paused_since:
            link.conn.pause_reading("client")

    def hold_client(self) -> None:
        """Hold client events until a replacement upstream is switched in (a recovery)."""
        self.gate.upstream_lost()

    def switch_to(self, new: UpstreamLink, shown_first: list[bytes], resent: list[dict[str, Any]]) -> None:
        """Make ``new`` the current upstream (already sent the replay's last part and ``resent``,
        the client events the old one never answered): its frames go to the client, held client
        events go to it, in order."""
        self.gate.on_server_event("session.created")
        for event in resent:
            self.gate.sent(event, str(event["type"]))  # a format change still holds later audio
        old, self.link = self.link, new  # frames from here on are the new upstream's
        if old is not None and old is not new:
            old.detach()
        for data in shown_first:
            self.on_upstream_text(new, data)
        self.attach(new)  # what arrived after the replay's echoes, then live frames
        self.release_held()

    def _upstream_closed(self, link: UpstreamLink) -> None:
        if self._closing or self._ended.done() or link is not self.link or link.closed_by_relay:
            return  # ours to close, or a replaced upstream
        self.log.info("upstream_closed", code=link.close_code, error_code=link.last_error_code)
        self.spawn(self.supervisor.recover(link), "recovery")

    def _on_upstream_message(self, link: UpstreamLink, opcode: int, data: bytes) -> None:
        if link is not self.link:
            return  # a replaced upstream's last words: the client has moved on
        if opcode == OP_TEXT:
            self.on_upstream_text(link, data)
        else:  # the API sends no binary frames; pass any through untouched
            self.client.send(data, OP_BINARY)  # not kept for a resume: nothing a client can use

    def on_upstream_text(self, link: UpstreamLink, data: bytes) -> None:
        received = time.perf_counter()
        if data.startswith(_AUDIO_DELTA_PREFIX):  # most server frames; never parsed
            event_type, event = "response.output_audio.delta", None
        else:
            event_type, event = event_type_of(data)
        if event_type not in _UNTRACKED_SERVER_TYPES:
            try:
                event = event if event is not None else _loads(data)
            except orjson.JSONDecodeError:
                self._unreadable_server_frame(data)
                return
            shown = self.on_server_event(link, event_type, event, data)
            if shown is None:
                return
            if shown is not data:
                event = None  # changed on the way: translate from the bytes actually shown
            data = shown
        else:
            self.supervisor.state.on_audio_delta(delta_chars(data))
        self.deliver(data, event_type, event, received)

    def _unreadable_server_frame(self, data: bytes) -> None:
        """A server text frame that is not JSON (the API sends none; a broken proxy on the way
        might): the app's SDK could not parse it either, and one frame is no reason to end the
        conversation. The app is told in the API's shape; the frame itself goes no further."""
        self.metrics.frame(U2C, "invalid", len(data))
        if not self._told_unreadable:  # one log line per conversation, whatever the upstream does
            self._told_unreadable = True
            self.log.warning("upstream_frame_not_json", bytes=len(data))
        self.send_client_event(
            error_event(
                "upstream_invalid_frame",
                f"The upstream sent a {len(data)}-byte message that is not JSON; the relay dropped it.",
                error_type="server_error",
            )
        )

    def deliver(
        self, data: bytes, event_type: str, event: dict[str, Any] | None = None, received: float = 0.0
    ) -> None:
        """Send a tracked server frame to the client (translated for a beta client)."""
        if self.beta is not None:
            beta = self.beta.server_bytes_to_beta(data, event)
            if beta is None:
                self._after_server_event(event_type)
                return
            data = beta
        self.to_client(data)
        self.metrics.frame(U2C, event_type, len(data))
        if received:
            self.metrics.latency(U2C, time.perf_counter() - received)
        self._after_server_event(event_type)

    def _after_server_event(self, event_type: str) -> None:
        if event_type in _RELEASING_SERVER_TYPES:
            self.release_held()

    def on_server_event(
        self, link: UpstreamLink, event_type: str, event: dict[str, Any], data: bytes
    ) -> bytes | None:
        """Track what the relay must know from a server event; returns the frame to forward."""
        if self.usage is not None:  # before anything is hidden: every response is billed
            self.usage.on_server_event(event_type, event)
        if event_type in _SNAPSHOT_TYPES:
            self._state_version += 1
        shown = self.supervisor.on_server_event(event_type, event, data)
        if shown is None:
            return None
        data = shown
        self.gate.on_server_event(event_type, event)
        self.checker.on_server_event(event_type, event)
        if event_type == "session.created":
            session = event.get("session")
            link.session_id = session.get("id") if isinstance(session, dict) else None
        elif event_type == "error":
            error = event.get("error")
            if isinstance(error, dict):
                link.last_error_code = error.get("code")
                return self._scrub_error(event, data)
        return data

    def _scrub_error(self, event: dict[str, Any], data: bytes) -> bytes:
        """The API's invalid_api_key message quotes part of the key: never pass that on (errors
        are rare, so each is checked; the bytes are re-encoded only when something changed)."""
        error = event["error"]
        if error.get("code") == "invalid_api_key":
            error["message"] = "The relay's upstream credentials were rejected by the provider."
            return dumps(event)
        return dumps(event) if _scrub(error) else data

    # ------------------------------------------------------------------ client side
    def on_client_message(self, opcode: int, data: bytes) -> None:
        """Every client frame a lane did not take: check it, then forward or hold it (F1, F2).

        The plain 20 ms append, ~50 a second per voice session, mostly takes the client's lane
        (relay.io.lanes), which does the same in fewer steps; this is the full path, for every
        other event and for the appends a lane declines.
        """
        if opcode != OP_TEXT:
            self._reject(InvalidEvent("invalid_event", _BINARY_MESSAGE))
            return
        received = time.perf_counter()
        try:
            checked = self.checker.check(data)
        except InvalidEvent as exc:
            self._reject(exc)
            return
        if self.beta is not None:
            self._report_dropped_beta_fields()
        for frame, event_type, event in checked:
            if event_type != _APPEND and event is not None:
                if self.seen.repeated(event, time.monotonic()):
                    # Sent again by an app unsure it arrived before its connection dropped.
                    self.metrics.client_events_deduplicated_total.inc()
                    continue
                if event_type == "response.create" and self.usage is not None:
                    refusal = self.usage.refusal(event)
                    if refusal is not None:  # over budget: refused, the session stays open
                        self._reject(refusal)
                        continue
            self.forward_upstream(frame, event_type, event)
            self.metrics.frame(C2U, event_type, len(frame))
        self.metrics.latency(C2U, time.perf_counter() - received)

    def forward_upstream(self, data: bytes, event_type: str, event: dict[str, Any] | None) -> None:
        """Send now, or hold until the upstream is ready (order is always kept)."""
        link = self.link
        if link is None or self.gate.must_hold(event_type):
            self._hold(data, event_type)
        elif event_type == _APPEND and event is not None and link.conn.send(data):
            self.supervisor.on_append(self.checker.audio)  # the commonest event: no wait at the gate
        else:
            self.send_now(link, data, event_type, event)

    def send_now(
        self,
        link: UpstreamLink,
        data: bytes,
        event_type: str,
        event: dict[str, Any] | None,
        held_at: float | None = None,
    ) -> bool:
        """Send ahead of anything held (for events that were sent before the held ones, and for
        the held ones when they are let go); False when the upstream took nothing.

        An upstream already closing takes nothing: the frame goes back to the head of the hold
        and on to the replacement the supervisor is about to open, in order.
        """
        if event_type in ITEM_EVENTS and self.supervisor.answers_itself(link, event or _loads(data), data):
            return True  # about an item the upstream holds otherwise than the app saw it
        upstream = data
        if event_type == "conversation.item.create" and self.supervisor.state.left_out_ids:
            event = event or _loads(data)
            upstream = self.supervisor.placed(event, data)  # after an item the upstream lacks
        if not link.send(upstream):
            self.gate.upstream_lost()
            self.gate.requeue(data, event_type, time.monotonic() if held_at is None else held_at)
            return False
        self.gate.sent(event, event_type)
        self.supervisor.on_client_event(event, data)
        return True

    def _hold(self, data: bytes, event_type: str) -> None:
        self.gate.hold(data, event_type, time.monotonic())
        if not self.gate.has_room() and not self.client.paused_for("hold"):
            # Backpressure: stop reading the client until held frames drain.
            self.metrics.backpressure_pauses_total.labels(C2U).inc()
            self.client.pause_reading("hold")
        self._held_metrics()

    def release_held(self) -> None:
        """Send every held frame the gate now allows, in order."""
        link = self.link
        with batch():  # what was held (audio sent before the session was ready) in one write
            while link is not None and (frame := self.gate.releasable()) is not None:
                if not self.send_now(link, frame.data, frame.event_type, _loads(frame.data), frame.held_at):
                    break
        self._held_metrics()
        if self.gate.has_room():
            self.client.resume_reading("hold")

    def _held_metrics(self) -> None:
        self.metrics.held_events.set(self.gate.held_count)
        self.metrics.held_bytes.set(self.gate.held_bytes)

    def _reject(self, exc: InvalidEvent) -> None:
        """Answer a refused client event, within the session's error budget.

        Each answer and log line costs the relay more than the bad frame cost the client; a
        flood of them (to a client that may not even read) is held to a rate, and what was held
        back is counted and reported in one line a second.
        """
        self.metrics.validation_rejections_total.labels(exc.code or "invalid").inc()
        now = time.monotonic()
        if self._error_budget.take(now):
            self.log.info("event_rejected", code=exc.code, param=exc.param)
            self.send_client_event(exc.to_event())
            return
        self.metrics.client_errors_suppressed_total.inc()
        if now - self._suppressed_logged_at >= 1.0:
            self._suppressed_logged_at = now
            self.log.warning("event_rejections_suppressed", total=self._error_budget.refused)

    def send_client_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "error":  # the one way the relay's own words reach a client
            _scrub(event.get("error"))
        if self.beta is not None:
            translated = self.beta.server_to_beta(event)
            if translated is None:
                return
            event = translated
        self.to_client(dumps(event))

    def _split_sample(self) -> None:
        """Legal, but worth knowing: apps that cut samples often have other audio bugs."""
        self.metrics.audio_split_samples_total.inc()
        self._split_samples += 1
        if self._split_samples == 1:
            self.log.info("audio_sample_split", detail="an append ended mid-sample; it is carried over")

    def _report_dropped_beta_fields(self) -> None:
        if self.beta is None or not self.beta.dropped_fields:
            return
        for field in self.beta.dropped_fields:
            self.metrics.beta_dropped_fields_total.labels(field).inc()
        self.log.warning("beta_fields_dropped", fields=self.beta.dropped_fields)
        self.beta.dropped_fields = []

    # ------------------------------------------------------------------ flow control
    def _client_write_paused(self, paused: bool) -> None:
        """The client reads slower than it is sent to: stop reading the upstream, and the client
        itself (whatever it sends now, pings included, would only queue answers it does not
        read: a client that never reads could otherwise grow the relay without bound)."""
        if paused:
            self.client.pause_reading("client_backlog")
        else:
            self.client.resume_reading("client_backlog")
        link = self.link
        if link is None:
            return
        if paused:
            self.metrics.backpressure_pauses_total.labels(U2C).inc()
            link.conn.pause_reading("client")
        else:
            link.conn.resume_reading("client")

    def _upstream_write_paused(self, paused: bool) -> None:
        """The upstream reads slower than the client sends: stop reading the client."""
        if paused:
            self.metrics.backpressure_pauses_total.labels(C2U).inc()
            self.client.pause_reading("upstream")
        else:
            self.client.resume_reading("upstream")

    # ------------------------------------------------------------------ housekeeping
    def housekeeping(self, now: float) -> None:
        """Hold timeouts, keepalive pings, stuck peers and the resume grace: a few times a second,
        on the process's one clock (relay.io.ticker). A failure ends the conversation."""
        if self._ended.done():
            return
        try:
            self._check_holds(now)
            self._check_peers(now, self.settings.ping_interval_s)
        except Exception as exc:  # each ends the conversation, reported as its cause
            self.end(exc)
            return
        if self.detached_at is not None and now - self.detached_at > self.settings.resume_grace_s:
            self.outcome = "resume_grace_expired"
            self.metrics.resumes_total.labels("grace_expired").inc()
            self.log.info("resume_grace_expired", grace_s=self.settings.resume_grace_s)
            self.end(None)
            return
        # A rotation falling due before the next check starts on time, not up to a period late.
        rotate_in = self.supervisor.rotate_at - now
        if rotate_in <= 0:
            self._rotation_check()
        elif rotate_in < self.ctx.ticker.period_s:
            asyncio.get_running_loop().call_later(rotate_in, self._rotation_check)

    def _rotation_check(self) -> None:
        if self.link is None or self._ended.done() or self._closing:
            return
        if self.supervisor.rotation_due(time.monotonic()):
            self.spawn(self.supervisor.start_rotation(), "rotation")

    def _check_holds(self, now: float) -> None:
        try:
            self.gate.check_timeout(now)
        except HoldOverflow:
            self.log.warning("hold_timeout", held_events=self.gate.held_count)
            raise

    def _check_peers(self, now: float, interval: float) -> None:
        limit = self.settings.stuck_peer_timeout_s
        if self.client.write_paused_since and now - self.client.write_paused_since > limit:
            self.log.warning("client_stuck", timeout_s=limit)
            raise ClientGone
        if not self.client.keepalive(now, interval):
            self.log.warning("client_unresponsive", ping_interval_s=interval)
            raise ClientGone
        link = self.link
        if link is None or link.closed:
            return
        if link.conn.write_paused_since and now - link.conn.write_paused_since > limit:
            raise UpstreamError(
                f"the upstream stopped reading for {limit:g} s",
                retryable=True,
                code="upstream_stuck",
            )
        if not link.conn.keepalive(now, interval):
            self.log.warning("upstream_unresponsive", ping_interval_s=interval)
            link.conn.abort()  # as a drop (1006): the supervisor replaces it


# Audio deltas are most of the server's frames and carry nothing the session state needs.
_AUDIO_DELTA_PREFIX = b'{"type":"response.output_audio.delta"'
_UNTRACKED_SERVER_TYPES = frozenset({"response.output_audio.delta", "response.audio.delta"})
_APPEND = "input_audio_buffer.append"
_RELEASING_SERVER_TYPES = frozenset({"session.created", "session.updated", "error"})
# What a snapshot holds (configuration, items, the response in flight) changes only with these:
# not with every transcript delta of a streaming answer.
_SNAPSHOT_TYPES = frozenset(
    {
        "session.created",
        "session.updated",
        "conversation.item.added",
        "conversation.item.created",
        "conversation.item.done",
        "conversation.item.deleted",
        "conversation.item.truncated",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.done",
    }
)


def _ignore_failure(exc: BaseException) -> None:
    return None


def _no_split_report() -> None:
    return None


def _scrub(error: Any) -> bool:
    """Redact an error's message in place; True if anything was removed."""
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return False
    scrubbed = redact_text(error["message"])
    if scrubbed == error["message"]:
        return False
    error["message"] = scrubbed
    return True


def _loads(data: bytes) -> dict[str, Any]:
    value = orjson.loads(data)
    return value if isinstance(value, dict) else {}


__all__ = ["Conversation", "new_id", "peek_type"]
