"""The supervisor: replaces a session's upstream proactively and after any drop (F3).

Proactive rotation is make-before-break: at a quiet point a new upstream is opened and replayed
while the old one still serves; client events arriving meanwhile are held; then traffic switches
atomically and the old upstream is closed with 1000. Reactive recovery reconnects with backoff
after an unexpected close, closes any response the client saw start (one ``response.done``),
replays, and resumes. The client keeps one connection and one session id throughout.

The state and the replay plan come from the sans-I/O core (``relay.core.session`` /
``relay.core.replay``); this module only moves frames and waits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from relay.core.backoff import classify_close, delays
from relay.core.errors import UpstreamError
from relay.core.replay import EchoFilter, plan_replay
from relay.core.session import SessionState, interrupted_response_done
from relay.io.frames import dumps
from relay.io.link import UpstreamLink
from relay.io.upstream import close_error

if TYPE_CHECKING:
    from relay.io.session import RelaySession

REPLAY_TIMEOUT_S = 15.0
_QUIET_AFTER_CLIENT_EVENT_S = 0.25  # an event still in flight to the old upstream is not quiet


@dataclass(frozen=True, slots=True)
class Replayed:
    """A finished replay: server frames to show after the switch, client events to re-send."""

    server_frames: list[bytes]
    resend: list[dict[str, Any]]


class ReplayFailed(Exception):
    """The new upstream dropped or rejected the replay; the attempt is retried."""


class Supervisor:
    """Owns the succession of upstream links behind one relay session."""

    def __init__(self, session: RelaySession) -> None:
        self.session = session
        settings = session.settings
        self.settings = settings
        self.state = SessionState(retain_user_audio=settings.replay_user_audio == "audio")
        self.first_session_id: str | None = None
        self.rotating = False
        self.replacements = 0
        self._rng = random.Random()
        self._last_client_event = 0.0
        self.rotate_at = self._next_rotation(time.monotonic())

    # ------------------------------------------------------------------ feeding the state
    def on_client_event(self, event: dict[str, Any] | None, data: bytes) -> None:
        self._last_client_event = time.monotonic()
        self.state.on_client_event(event if event is not None else _loads(data))

    def on_append(self, event: dict[str, Any]) -> None:
        """The commonest client event, tracked in short: only its audio is kept (for a replay)."""
        self._last_client_event = time.monotonic()
        self.state.append_audio(event["audio"])

    def on_server_event(self, event_type: str, event: dict[str, Any], data: bytes) -> bytes | None:
        """Track a server event; returns the frame for the client (None: not shown)."""
        self.state.on_server_event(event)
        if event_type == "session.created":
            if self.first_session_id is None:
                self.first_session_id = _session_id(event)
                return data
            return None
        if event_type == "session.updated" and self.replacements:
            return _with_session_id(event, self.first_session_id)
        return data

    # ------------------------------------------------------------------ rotation
    def _next_rotation(self, now: float) -> float:
        after = self.settings.rotate_after_s
        if after <= 0:
            return float("inf")
        jitter = self.settings.rotate_jitter_s
        return now + max(1.0, after + self._rng.uniform(-jitter, jitter))

    def rotation_due(self, now: float) -> bool:
        if self.rotating or now < self.rotate_at:
            return False
        waited = now - self.rotate_at
        quiet = self.state.is_quiet() and now - self._last_client_event > _QUIET_AFTER_CLIENT_EVENT_S
        # After waiting too long for a quiet point, settle for a response boundary (audio may be
        # uncommitted: it is replayed; nothing else may be in flight).
        return quiet or (waited > self.settings.rotate_quiet_max_wait_s and self.state.at_response_boundary())

    def start_rotation(self) -> Coroutine[Any, Any, None]:
        """The rotation to run as a task. Client events are held from this moment, not from when
        the task first runs: an event slipping through to the old upstream would start something
        (a response, say) that the switch then cuts off."""
        self.rotating = True
        self.session.gate.session_ready = False  # hold client events until the switch
        return self._rotate(self.state.server_changes)

    async def _rotate(self, changes_before: int) -> None:
        """Make-before-break: replay onto a new upstream, then switch traffic to it."""
        session = self.session
        old = session.link
        started = time.monotonic()
        try:
            new, replayed = await self._open_and_replay(attempts=3)
        except UpstreamError as exc:
            session.log.warning("rotation_failed", reason=exc.message)
            self._resume_after_failed_rotation(old)
            return
        finally:
            self.rotating = False
        if old is None or session.link is not old or old.closed:
            # The old upstream dropped meanwhile and recovery replaced it (or is doing so): this
            # replay was planned from an older state, so it must not win.
            session.log.info("rotation_abandoned", reason="upstream replaced during the rotation")
            await new.close(1000)
            return
        if self.state.server_changes != changes_before:
            # The old upstream moved on meanwhile (server VAD committed held-back audio and
            # started a response, say): switching now would cut that off. Try again later.
            session.log.info("rotation_abandoned", reason="the old upstream moved on during the replay")
            self._resume_after_failed_rotation(old, retry_soon=True)
            await new.close(1000)
            return
        self._switch(new, replayed, cause="rotation", started=started)
        await old.close(1000)

    def _resume_after_failed_rotation(self, old: UpstreamLink | None, *, retry_soon: bool = False) -> None:
        if not retry_soon:
            self.rotate_at = self._next_rotation(time.monotonic())
        if old is not None and self.session.link is old and not old.closed:
            self.session.gate.session_ready = True
            self.session.release_held()

    # ------------------------------------------------------------------ reactive recovery
    async def recover(self, dead: UpstreamLink) -> None:
        """After an unexpected close: reconnect, replay and resume, or raise why not."""
        session = self.session
        cause, fatal = classify_close(dead.close_code, dead.last_error_code)
        session.log.info("upstream_lost", code=dead.close_code, cause=cause, fatal=fatal)
        if fatal:
            raise close_error(dead.close_code, dead.last_error_code)
        started = time.monotonic()
        session.gate.upstream_lost()
        not_started = self.state.response_requested and self.state.active_response is None
        done = interrupted_response_done(self.state, "upstream_replaced")
        if done is not None:
            session.send_client_event(done)
        new, replayed = await self._open_and_replay(attempts=self.settings.reconnect_max_attempts)
        self._switch(new, replayed, cause=cause, started=started)
        if not_started and self.settings.rerequest_pending_response:
            session.forward_upstream(b'{"type":"response.create"}', "response.create", None)

    async def _open_and_replay(self, attempts: int) -> tuple[UpstreamLink, Replayed]:
        """Connect and replay, retrying with backoff; drops during a replay restart it."""
        last: UpstreamError | None = None
        base, cap = self.settings.reconnect_base_delay_s, self.settings.reconnect_max_delay_s
        for delay in [0.0, *delays(base, cap, max(0, attempts - 1), self._rng)]:
            await asyncio.sleep(delay)
            try:
                link = await self.session.open_link()
            except UpstreamError as exc:
                if not exc.retryable:
                    raise
                last = exc
                continue
            try:
                return link, await self._replay(link)
            except ReplayFailed as exc:
                self.session.log.warning("replay_failed", reason=str(exc))
                await link.close(1000)
                last = UpstreamError(str(exc), retryable=True, code="replay_failed")
            except BaseException:  # cancelled with the session: never leave an upstream open
                link.close_now()
                raise
        raise UpstreamError(
            f"the upstream could not be re-established after {attempts} attempts"
            + (f": {last.message}" if last else ""),
            retryable=True,
            code="upstream_retries_exhausted",
        )

    async def _replay(self, link: UpstreamLink) -> Replayed:
        """Replay the session onto ``link``; returns server frames to show after the switch."""
        started = time.monotonic()
        created = await self._receive_event(link, until="session.created")
        link.session_id = _session_id(created)
        plan = plan_replay(
            self.state,
            max_items=self.settings.replay_max_items,
            max_tokens=self.settings.replay_max_tokens,
            user_audio=self.settings.replay_user_audio,
        )
        echo = EchoFilter(plan)
        for event in plan.events:
            if not link.send(dumps(event)):
                raise ReplayFailed("the new upstream closed while the replay was being sent")
        pending = await self._await_acknowledgement(link, echo)
        replayed = Replayed(pending, plan.resend)
        metrics = self.session.metrics
        metrics.replay_duration_seconds.observe(time.monotonic() - started)
        metrics.replay_items_total.labels("replayed").inc(plan.replayed)
        metrics.replay_items_total.labels("trimmed").inc(plan.trimmed)
        self.session.log.info(
            "replayed",
            upstream_session=link.session_id,
            items=plan.replayed,
            trimmed=plan.trimmed,
            duration_s=round(time.monotonic() - started, 4),
        )
        return replayed

    async def _await_acknowledgement(self, link: UpstreamLink, echo: EchoFilter) -> list[bytes]:
        pending: list[bytes] = []
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        while not echo.done:
            data = await self._receive(link, deadline)
            event = _loads(data)
            if echo.suppress(event):
                continue
            if echo.error is not None:
                raise ReplayFailed(f"the upstream rejected the replay: {echo.error}")
            pending.append(data)
        return pending

    async def _receive_event(self, link: UpstreamLink, until: str) -> dict[str, Any]:
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        while True:
            event = _loads(await self._receive(link, deadline))
            if event.get("type") == until:
                return event
            if event.get("type") == "error":
                raise ReplayFailed(f"the new upstream refused the session: {event.get('error')}")

    async def _receive(self, link: UpstreamLink, deadline: float) -> bytes:
        try:
            async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                data = await link.receive()
        except TimeoutError:
            raise ReplayFailed("the new upstream did not answer the replay in time") from None
        if data is None:
            raise ReplayFailed(f"the new upstream closed during the replay (code {link.close_code})")
        return data

    # ------------------------------------------------------------------ switching
    def _switch(self, new: UpstreamLink, replayed: Replayed, *, cause: str, started: float) -> None:
        """Make ``new`` the current upstream and let held client events flow to it, in order.

        Synchronous from start to end: no frame from either upstream or the client can come
        between the replay's last echo and the held events going out.
        """
        session = self.session
        self.replacements += 1
        session.metrics.upstream_replacements_total.labels(cause).inc()
        session.gate.on_server_event("session.created")
        old, session.link = session.link, new  # frames from here on are the new upstream's
        if old is not None and old is not new:
            old.detach()
        for data in replayed.server_frames:
            session.on_upstream_text(new, data)
        session.attach(new)  # what arrived after the replay's echoes, then live frames
        # Client events the old upstream never answered go first; re-sending tracks them again.
        self.state.pending_updates.clear()
        self.state.pending_creates.clear()
        for event in replayed.resend:
            session.send_now(new, dumps(event), str(event["type"]), event)
        session.release_held()
        session.metrics.client_gap_seconds.observe(time.monotonic() - started)
        self.rotate_at = self._next_rotation(time.monotonic())
        if self.settings.notify_replacements:
            session.send_client_event(
                {"type": "relay.upstream_replaced", "cause": cause, "replacements": self.replacements}
            )
        session.log.info("upstream_switched", cause=cause, upstream_session=new.session_id)


def _loads(data: bytes) -> dict[str, Any]:
    value = orjson.loads(data)
    return value if isinstance(value, dict) else {}


def _session_id(event: dict[str, Any]) -> str | None:
    session = event.get("session")
    value = session.get("id") if isinstance(session, dict) else None
    return value if isinstance(value, str) else None


def _with_session_id(event: dict[str, Any], session_id: str | None) -> bytes:
    session = event.get("session")
    if isinstance(session, dict) and session_id is not None:
        session["id"] = session_id
    return dumps(event)
