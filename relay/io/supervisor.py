"""The supervisor: replaces a session's upstream proactively and after any drop (F3).

Both paths prepare a new upstream the same way: connect, await its ``session.created``, replay
the configuration and conversation from a plan, and await the echoes. A proactive rotation does
this while the old upstream keeps serving the client (the live API takes hundreds of
milliseconds to announce a session; the app's audio must not wait for that), then, at a quiet
point, switches in one synchronous step: the delta since the plan, the input audio the old
upstream still held, the client events it had not answered, and traffic moves to the new one.
A recovery after an unexpected close holds the client's events while it prepares (there is no
upstream to serve them), closes any response the client saw start (one ``response.done``), and
switches the same way. The client keeps one connection and one session id throughout.

Upstream events that exist only because an upstream is ending (the ``session_expired`` notice)
and the answers to what the relay itself sent (replay echoes, errors of its own events) are
consumed here, counted and logged, never shown: a replacement the app would notice is not
transparent. The opt-in ``relay.upstream_replaced`` event stays the one signal.

The state and the plans come from the sans-I/O core (``relay.core.session``,
``relay.core.replay``); this module only moves frames and waits.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import pybase64

from relay.core.backoff import classify_close, delays
from relay.core.errors import UpstreamError, new_id
from relay.core.gate import ReadinessGate
from relay.core.policy import Policy, merge
from relay.core.replay import EchoFilter, ReplayPlan, plan_delta, plan_replay, plan_tail, plan_transcriptions
from relay.core.replayed import LocalAnswer, answer_locally, placed_create
from relay.core.session import Interruption, SessionState, interrupt_response
from relay.core.transcripts import FINISHED, TranscriptOrder
from relay.io.frames import dumps
from relay.io.link import UpstreamLink
from relay.io.upstream import close_error
from relay.observability.metrics import RelayMetrics
from relay.settings import Settings

REPLAY_TIMEOUT_S = 15.0
_QUIET_POLL_S = 0.02  # how often a prepared rotation looks for a quiet moment to switch
_EXPIRY_MARGIN_S = 120.0  # rotate at least this long before an upstream's announced expiry
# Connecting, session.created and a replay, with the live API's timing (docs/simulator.md); the
# first replacement replaces this with what it measured.
_SET_UP_ESTIMATE_S = 1.0
_JITTER_SHARE = 0.1  # rotation jitter is at most this share of the interval
# Upstream errors that announce the upstream's end, not a problem of the client's: the
# replacement that follows is the supervisor's business (reference §1.3).
END_OF_LIFE_CODES = frozenset({"session_expired"})
_COMMIT_ORDERED = FINISHED | {"input_audio_buffer.committed"}
# The echoes of a new item (GA: added, then done; beta: created), which name the item before it.
_ITEM_ECHOES = frozenset({"conversation.item.added", "conversation.item.done", "conversation.item.created"})
_MAX_PLACED = 64  # new items placed otherwise than asked whose echoes are still due


class Conversation(Protocol):
    """What the supervisor needs of the session it serves (no import cycle between them)."""

    settings: Settings
    metrics: RelayMetrics
    log: Any
    link: UpstreamLink | None
    gate: ReadinessGate
    call_id: str | None  # a phone call's control socket: reattached, never rotated or replayed

    async def open_link(self) -> UpstreamLink: ...
    def hold_client(self) -> None: ...
    def switch_to(
        self, new: UpstreamLink, shown_first: list[bytes], resent: list[dict[str, Any]]
    ) -> None: ...
    def send_client_event(self, event: dict[str, Any]) -> None: ...
    def deliver(self, data: bytes, event_type: str) -> None: ...
    def forward_upstream(self, data: bytes, event_type: str, event: dict[str, Any] | None) -> None: ...
    def on_upstream_text(self, link: UpstreamLink, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Prepared:
    """A new upstream that has the replayed plan, and what it sent that the client may see."""

    link: UpstreamLink
    plan: ReplayPlan | None  # None: a call's session, reattached as it stands (nothing replayed)
    frames: list[bytes]


class ReplayFailed(Exception):
    """The new upstream dropped or rejected the replay; the attempt is retried."""


class Supervisor:
    """Owns the succession of upstream links behind one relay session."""

    def __init__(self, session: Conversation) -> None:
        # Not a strong reference back: the session owns this supervisor, and the cycle would
        # leave both for the cyclic collector when the session ends (relay.observability.gc_pauses).
        self.session: Conversation = weakref.proxy(session)
        settings = session.settings
        self.settings = settings
        self.state = SessionState(
            retain_user_audio=settings.replay_user_audio == "audio", max_items=settings.replay_max_items
        )
        self.first_session_id: str | None = None
        self.rotating = False
        self.replacements = 0
        self._rng = random.Random()
        self._relay_ids = f"relay_{new_id('', 8)}_"  # the event ids of the relay's own events
        self._sent = 0
        self._echo: EchoFilter | None = None  # answers to the last switch's events, still due
        self._expires = float("inf")  # when to have left the current upstream (its cap, less a margin)
        self._set_up_s = _SET_UP_ESTIMATE_S  # how long preparing a replacement takes: measured
        self.rotate_at = self._next_rotation(time.monotonic())
        self.baseline = Policy.from_settings(settings).session_baseline()
        self.transcripts = TranscriptOrder()
        # A re-transcribed utterance's id on the new upstream -> the id the app was given.
        self._alias: dict[str, str] = {}
        # A new item placed after one the upstream does not hold -> the item the app named.
        self._placed: dict[str, str] = {}

    # ------------------------------------------------------------------ feeding the state
    def on_client_event(self, event: dict[str, Any] | None, data: bytes) -> None:
        event = event if event is not None else _loads(data)
        if event.get("type") == "input_audio_buffer.append":
            self.state.append_audio(_audio_of(event))
        else:
            self.state.on_client_event(event)

    def on_append(self, audio: bytes) -> None:
        """The commonest client event, tracked in short: only its audio is kept (for a replay)."""
        self.state.audio.append(audio)

    @property
    def passes_stream_events(self) -> bool:
        """Whether a streaming answer's event (a text delta, the end of a part: relay.core.protocol's
        ``STREAM_EVENT_TYPES``) needs nothing of ``on_server_event`` but the state's mirror: no
        switch's answers are due (which it might be) and no item id is translated (which it
        might name). Read by the delta lane."""
        return self._echo is None and not self._alias

    def on_server_event(self, event_type: str, event: dict[str, Any], data: bytes) -> bytes | None:
        """Track a server event; returns the frame for the client (None: not shown)."""
        echo = self._echo
        if echo is not None and echo.suppress(event):
            self._answered_own(event_type, event, echo)
            if echo.done:
                self._echo = None
            return None
        if event_type == "error":
            code = _error_code(event)
            if code in END_OF_LIFE_CODES:
                self._hidden(str(code), None)
                return None
            if _error_event_id(event).startswith(self._relay_ids):  # e.g. a re-requested response
                self._hidden("relay_caused_error", code)
                return None
        if self._alias and event.get("item_id") in self._alias:
            event["item_id"] = self._alias[event["item_id"]]  # the app only knows its own id
            data = dumps(event)
        if event_type == "conversation.item.retrieved":
            data = self._as_shown(event, data)
        if self._placed and event_type in _ITEM_ECHOES:
            data = self._as_placed(event_type, event, data)
        self.state.on_server_event(event)
        if event_type in _COMMIT_ORDERED and self.state.transcription:
            return self._in_commit_order(event_type, event, data)
        if event_type == "session.created":
            self._note_expiry(event)
            if self.first_session_id is None:
                self.first_session_id = _session_id(event)
                return self._start(event, data)
            return None
        if event_type == "session.updated" and self.replacements:
            return _with_session_id(event, self.first_session_id)
        return data

    def _as_shown(self, event: dict[str, Any], data: bytes) -> bytes:
        """A retrieved item the upstream has only as replayed: the app gets it as it was shown
        (an assistant's audio answer, not the text the replay gave the new upstream)."""
        item = event.get("item")
        item_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(item_id, str) or item_id not in self.state.replayed_ids:
            return data
        shown = self.state.shown_item(item_id)
        if shown is None:
            return data
        event["item"] = shown
        return dumps(event)

    def placed(self, event: dict[str, Any], data: bytes) -> bytes:
        """The frame the upstream takes for a client event: ``data`` itself, unless it places a
        new item after one the replay left out (``relay.core.replayed.placed_create``), whose
        echo is then shown as the app asked."""
        upstream = placed_create(self.state, event)
        if upstream is None:
            return data
        self._placed[upstream["item"]["id"]] = event["previous_item_id"]
        while len(self._placed) > _MAX_PLACED:  # an echo that never came (a refusal): let it go
            del self._placed[next(iter(self._placed))]
        return dumps(upstream)

    def _as_placed(self, event_type: str, event: dict[str, Any], data: bytes) -> bytes:
        item = event.get("item")
        item_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(item_id, str) or (asked := self._placed.get(item_id)) is None:
            return data
        if event_type != "conversation.item.added":  # its last echo
            del self._placed[item_id]
        event["previous_item_id"] = asked
        return dumps(event)

    def answers_itself(self, link: UpstreamLink, event: dict[str, Any], data: bytes) -> bool:
        """Answer an item event the current upstream cannot (``relay.core.replayed``) instead of
        sending it; False: it goes upstream as usual."""
        local = answer_locally(self.state, event, self.settings.replay_user_audio)
        if local is None:
            return False
        self.on_client_event(event, data)  # in flight until its answer, as if sent
        self._give(link, local)
        return True

    def _answer_in_flight(self, link: UpstreamLink, event: dict[str, Any]) -> None:
        local = answer_locally(self.state, event, self.settings.replay_user_audio)
        if local is None:  # changed since (an earlier one deleted the item): the upstream's to answer
            link.send(dumps(event))
        else:
            self._give(link, local)

    def _give(self, link: UpstreamLink, local: LocalAnswer) -> None:
        self.session.on_upstream_text(link, dumps(local.answer))  # the state takes it in, the app sees it
        if local.upstream:
            self._send_own(link, local.upstream)

    def _in_commit_order(self, event_type: str, event: dict[str, Any], data: bytes) -> bytes | None:
        """Transcription sessions: transcripts reach the app in the order it committed audio."""
        item_id = str(event.get("item_id"))
        if event_type == "input_audio_buffer.committed":
            self.transcripts.committed(item_id)
            return data
        for frame in self.transcripts.finished(item_id, data):
            self.session.deliver(frame, event_type)
        return None

    def _answered_own(self, event_type: str, event: dict[str, Any], echo: EchoFilter) -> None:
        """An answer to the relay's own event: its effects are kept, the client sees nothing."""
        if event_type == "session.updated":
            self.state.set_config(event)
        elif event_type == "error":
            self._hidden("relay_caused_error", echo.error)
        if event_type in ("session.updated", "error"):
            self.session.gate.on_server_event(event_type, event)  # a wait it opened is over

    def _start(self, created: dict[str, Any], data: bytes) -> bytes:
        """The session exists: apply the operator's baseline before any client event reaches it,
        and show the client the session as it now is."""
        link = self.session.link
        if self.baseline is None or link is None:
            return data
        update = {"type": "session.update", "session": {"type": "realtime", **self.baseline}}
        self._send_own(link, [update])
        session = created.get("session")
        if isinstance(session, dict):
            created["session"] = merge(session, self.baseline)
        return dumps(created)

    def _send_own(self, link: UpstreamLink, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send the relay's own events to the current upstream; their answers are not shown."""
        owned = [self._own(event) for event in events]
        for event in owned:
            link.send(dumps(event))
            self.session.gate.sent(event, str(event["type"]))  # a format change holds later audio
        if self._echo is None:
            self._echo = EchoFilter(owned, relay_ids=self._relay_ids, strict=False)
        else:
            self._echo.expect(owned)
        return owned

    def _hidden(self, reason: str, detail: str | None) -> None:
        self.session.metrics.upstream_events_hidden_total.labels(reason).inc()
        self.session.log.info("upstream_event_hidden", reason=reason, detail=detail)

    def _note_expiry(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        expires_at = session.get("expires_at") if isinstance(session, dict) else None
        if isinstance(expires_at, int | float) and expires_at > 0:
            lifetime = max(0.0, expires_at - time.time())
            # Two minutes before a 30- or 60-minute cap; a tenth of a lifetime that is shorter,
            # but never less than twice what preparing a replacement takes (else the cap comes
            # while the replacement is still being prepared), within half the lifetime.
            margin = min(_EXPIRY_MARGIN_S, max(lifetime * 0.1, 2 * self._set_up_s), lifetime * 0.5)
            self._expires = time.monotonic() + lifetime - margin
            self.rotate_at = min(self.rotate_at, self._latest_rotation())

    def _latest_rotation(self) -> float:
        return self._expires

    # ------------------------------------------------------------------ rotation
    def _next_rotation(self, now: float) -> float:
        after = self.settings.rotate_after_s
        if after <= 0:
            return self._latest_rotation()
        # Jitter spreads rotations of sessions started together, in proportion to the interval:
        # 60 s on a 10-minute interval, but never 60 s on a 4-second one.
        jitter = min(self.settings.rotate_jitter_s, after * _JITTER_SHARE)
        return min(now + max(0.5, after + self._rng.uniform(-jitter, jitter)), self._latest_rotation())

    def rotation_due(self, now: float) -> bool:
        # A call's session is the call: a new one would be a new call, so it is never rotated.
        return not self.rotating and now >= self.rotate_at and self.session.call_id is None

    def start_rotation(self) -> Coroutine[Any, Any, None]:
        """The rotation to run as a task. Nothing is held while it prepares."""
        self.rotating = True
        return self._rotate()

    async def _rotate(self) -> None:
        session = self.session
        old = session.link
        started = time.monotonic()
        try:
            prepared = await self._prepare(attempts=3, recovering=False)
        except UpstreamError as exc:
            session.log.warning("rotation_failed", reason=exc.message)
            self.rotating = False
            self.rotate_at = self._next_rotation(time.monotonic())
            return
        try:
            switched = await self._switch_when_quiet(old, prepared)
        except BaseException:  # cancelled with the session: never leave an upstream open
            prepared.link.close_now()
            raise
        finally:
            self.rotating = False
        if not switched:
            await prepared.link.close(1000)
            return
        session.metrics.rotation_prepare_seconds.observe(time.monotonic() - started)
        if old is not None:
            await old.close(1000)

    async def _switch_when_quiet(self, old: UpstreamLink | None, prepared: Prepared) -> bool:
        """Switch at the first quiet moment; after waiting long, at a response boundary."""
        session = self.session
        settle_by = time.monotonic() + self.settings.rotate_quiet_max_wait_s
        give_up = settle_by + self.settings.rotate_quiet_max_wait_s
        while True:
            if old is None or session.link is not old or old.closed:
                # The old upstream dropped meanwhile and recovery replaced it (or is doing so).
                session.log.info("rotation_abandoned", reason="upstream replaced during the rotation")
                return False
            if prepared.link.closed:
                session.log.info("rotation_abandoned", reason="the new upstream closed before the switch")
                self.rotate_at = self._next_rotation(time.monotonic())
                return False
            now = time.monotonic()
            if self.state.is_quiet() or (now > settle_by and self.state.at_response_boundary()):
                self._switch(prepared, cause="rotation", held_since=now)
                return True
            if now > give_up:
                session.log.info("rotation_abandoned", reason="no quiet moment")
                self.rotate_at = self._next_rotation(now)
                return False
            await asyncio.sleep(_QUIET_POLL_S)

    def cancel_response(self) -> None:
        """Stop the response streaming to an app that went away (the setting that prefers a
        cheaper re-ask to an answer kept for its return)."""
        link = self.session.link
        if link is not None:
            self._send_own(link, [{"type": "response.cancel"}])

    # ------------------------------------------------------------------ reactive recovery
    async def recover(self, dead: UpstreamLink) -> None:
        """After an unexpected close: reconnect, replay and resume, or raise why not."""
        session = self.session
        cause, fatal = classify_close(dead.close_code, dead.last_error_code)
        session.log.info("upstream_lost", code=dead.close_code, cause=cause, fatal=fatal)
        if fatal:
            raise close_error(dead.close_code, dead.last_error_code)
        started = time.monotonic()
        session.hold_client()
        # A call's session lives on at the API: its new socket attaches to it as it stands, its
        # responses still play to the caller and their events arrive on the new socket.
        cut = self.interrupt_response()
        if cut.done is not None:
            session.send_client_event(cut.done)
        prepared = await self._prepare(attempts=self.settings.reconnect_max_attempts, recovering=True)
        self._switch(prepared, cause=cause, held_since=started)
        self.ask_again(cut.again)

    def interrupt_response(self) -> Interruption:
        """End the response in flight for a replacement (see ``interrupt_response``)."""
        own_session = self.session.call_id is None
        ask_again = self.settings.rerequest_pending_response
        return interrupt_response(
            self.state, "upstream_replaced", own_session=own_session, ask_again=ask_again
        )

    def ask_again(self, params: dict[str, Any] | None) -> None:
        """Ask the current upstream for a response cut before anything of it reached the app."""
        if params is None:
            return
        request: dict[str, Any] = {"type": "response.create", "event_id": self._relay_event_id()}
        if params:
            request["response"] = params
        self.session.forward_upstream(dumps(request), "response.create", request)

    async def take_over(self, ask_again: dict[str, Any] | None = None) -> None:
        """The first upstream of a conversation taken over from another process: prepared like a
        replacement (connect, replay the stored state), the client's events held meanwhile; then
        the response the old process cut before the app heard any of it is asked for again."""
        started = time.monotonic()
        self.session.hold_client()
        prepared = await self._prepare(attempts=self.settings.reconnect_max_attempts, recovering=True)
        self._switch(prepared, cause="takeover", held_since=started)
        self.ask_again(ask_again)

    # ------------------------------------------------------------------ preparing
    async def _prepare(self, attempts: int, *, recovering: bool) -> Prepared:
        """Connect and replay, retrying with backoff; drops during a replay restart it."""
        last: UpstreamError | None = None
        base, cap = self.settings.reconnect_base_delay_s, self.settings.reconnect_max_delay_s
        for delay in [0.0, *delays(base, cap, max(0, attempts - 1), self._rng)]:
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                link = await self.session.open_link()
            except UpstreamError as exc:
                if exc.status == 404 and self.session.call_id is not None:
                    raise UpstreamError(
                        "the call has ended (the upstream no longer knows its call_id)",
                        retryable=False,
                        code="call_ended",
                    ) from None
                if not exc.retryable:
                    raise
                last = exc
                continue
            try:
                prepared = await self._replay(link, recovering=recovering)
                self._set_up_s = time.monotonic() - started
                return prepared
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

    def _plan(self) -> ReplayPlan:
        plan = plan_replay(
            self.state,
            max_items=self.settings.replay_max_items,
            max_tokens=self.settings.replay_max_tokens,
            user_audio=self.settings.replay_user_audio,
        )
        if self.baseline is not None:  # even if the drop came before its echo did
            plan.update["session"] = merge(plan.update["session"], self.baseline)
        return plan

    async def _replay(self, link: UpstreamLink, *, recovering: bool) -> Prepared:
        """Replay the configuration and conversation onto ``link`` and await its echoes; after a
        loss, also the utterances the lost upstream had not transcribed (a rotation's old
        upstream is alive and transcribes them itself: the switch waits for that)."""
        started = time.monotonic()
        created = await self._receive_event(link, until="session.created")
        link.session_id = _session_id(created)
        if self.session.call_id is not None:
            return Prepared(link, None, [])  # the call's session, as it stands: nothing to replay
        plan = self._plan()
        pending, transcribing = plan_transcriptions(self.state) if recovering else ([], [])
        events = [self._own(event) for event in (*plan.events, *pending)]
        echo = EchoFilter(events, relay_ids=self._relay_ids)
        for event in events:
            if not link.send(dumps(event)):
                raise ReplayFailed("the new upstream closed while the replay was being sent")
        frames = await self._await_acknowledgement(link, echo)
        self._alias.update((new, old) for new, old in zip(echo.committed, transcribing, strict=False) if new)
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
        return Prepared(link, plan, frames)

    def _own(self, event: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``event`` as the relay's own: an event id the relay recognises in errors
        (a copy: the plan it came from is compared with later ones)."""
        return {**event, "event_id": self._relay_event_id()}

    def _relay_event_id(self) -> str:
        self._sent += 1
        return f"{self._relay_ids}{self._sent}"

    async def _await_acknowledgement(self, link: UpstreamLink, echo: EchoFilter) -> list[bytes]:
        frames: list[bytes] = []
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        while not echo.done:
            data = await self._receive(link, deadline)
            event = _loads(data)
            if echo.suppress(event):
                if echo.error is not None:
                    self._refused(link, event, "the upstream rejected the replay")
                continue
            frames.append(data)
        return frames

    async def _receive_event(self, link: UpstreamLink, until: str) -> dict[str, Any]:
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        while True:
            event = _loads(await self._receive(link, deadline))
            if event.get("type") == until:
                self._note_expiry(event)
                return event
            if event.get("type") == "error":
                self._refused(link, event, "the new upstream refused the session")

    def _refused(self, link: UpstreamLink, event: dict[str, Any], what: str) -> None:
        """An ``error`` from a new upstream: a permanent one (a rejected key, an unknown model)
        ends the attempts at once; anything else fails this attempt. Only the code is kept: the
        upstream's text may quote the key (invalid_api_key does)."""
        code = _error_code(event)
        link.last_error_code = code
        if classify_close(None, code)[1]:
            raise close_error(None, code)
        raise ReplayFailed(f"{what} ({code or 'no code'})")

    async def _receive(self, link: UpstreamLink, deadline: float) -> bytes:
        try:
            async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                data = await link.receive()
        except TimeoutError:
            raise ReplayFailed("the new upstream did not answer the replay in time") from None
        if data is None:
            if classify_close(link.close_code, link.last_error_code)[1]:
                raise close_error(link.close_code, link.last_error_code)
            raise ReplayFailed(f"the new upstream closed during the replay (code {link.close_code})")
        return data

    # ------------------------------------------------------------------ switching
    def _switch(self, prepared: Prepared, *, cause: str, held_since: float) -> None:
        """Bring ``prepared`` up to date and make it the current upstream, in one synchronous step.

        No frame from either upstream or the client can come between the last event sent here
        and the client's next one, and the new upstream takes them in that order: no waiting for
        its answers (they are recognised as they come, :class:`EchoFilter`).
        """
        session, state, new = self.session, self.state, prepared.link
        self._echo = None  # the old upstream's answers are not coming any more
        if prepared.plan is None:  # a call's control socket, reattached
            self.replacements += 1
            session.metrics.upstream_replacements_total.labels(cause).inc()
            session.switch_to(new, [], [])
            session.metrics.client_gap_seconds.observe(time.monotonic() - held_since)
            return
        delta = self._send_own(new, plan_delta(prepared.plan, self._plan()))
        state.mark_replayed(_replayed_ids(prepared.plan, delta))
        # The audio is the relay's to re-send; the events in it are the client's own (its ids).
        tail = plan_tail(state)
        local = []  # item events the new upstream cannot answer: the relay does, below
        for event in tail.events:
            if answer_locally(state, event, self.settings.replay_user_audio) is not None:
                local.append(event)
                continue
            data = dumps(self._own(event) if event["type"] == "input_audio_buffer.append" else event)
            new.send(self.placed(event, data))
        if self._echo is not None and self._echo.done:
            self._echo = None
        state.audio.restart(tail.audio, speaking=state.speech_in_progress)
        state.in_flight.rebase(tail.positions)
        self.replacements += 1
        session.metrics.upstream_replacements_total.labels(cause).inc()
        for event in local:  # in flight before anything held: answered first
            self._answer_in_flight(new, event)
        resent = [e for e in tail.events if e["type"] != "input_audio_buffer.append" and e not in local]
        session.switch_to(new, prepared.frames, resent)
        session.metrics.client_gap_seconds.observe(time.monotonic() - held_since)
        self.rotate_at = self._next_rotation(time.monotonic())
        if self.settings.notify_replacements:
            session.send_client_event(
                {"type": "relay.upstream_replaced", "cause": cause, "replacements": self.replacements}
            )
        session.log.info(
            "upstream_switched",
            cause=cause,
            upstream_session=new.session_id,
            delta_events=len(delta),
            replayed_audio_bytes=len(tail.audio),
        )


def _replayed_ids(plan: ReplayPlan, delta: list[dict[str, Any]]) -> set[str]:
    """The items a replacement upstream was given: the plan's, as the delta since changed them."""
    ids = set(plan.item_ids)
    for event in delta:
        if event["type"] == "conversation.item.create":
            ids.add(event["item"]["id"])
        elif event["type"] == "conversation.item.delete":
            ids.discard(event["item_id"])
    return ids


def _loads(data: bytes) -> dict[str, Any]:
    value = orjson.loads(data)
    return value if isinstance(value, dict) else {}


def _audio_of(event: dict[str, Any]) -> bytes:
    """An append's audio, already checked (or not to be: validation is off): decoded leniently."""
    audio = event.get("audio")
    try:
        return pybase64.b64decode(audio) if isinstance(audio, str) else b""
    except ValueError:
        return b""


def _error_code(event: dict[str, Any]) -> str | None:
    error = event.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _error_event_id(event: dict[str, Any]) -> str:
    error = event.get("error")
    value = error.get("event_id") if isinstance(error, dict) else None
    return value if isinstance(value, str) else ""


def _session_id(event: dict[str, Any]) -> str | None:
    session = event.get("session")
    value = session.get("id") if isinstance(session, dict) else None
    return value if isinstance(value, str) else None


def _with_session_id(event: dict[str, Any], session_id: str | None) -> bytes:
    session = event.get("session")
    if isinstance(session, dict) and session_id is not None:
        session["id"] = session_id
    return dumps(event)
