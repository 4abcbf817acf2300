"""The simulator's clock: how long the live Realtime API takes to connect, acknowledge and answer.

A simulator that answers instantly hides real failures: a relay that replaces upstream sessions
measured a 7 ms gap against it and stalled the app's audio by 250-310 ms against an upstream with
the live API's timing. So the simulator keeps the live API's timing by default
(:meth:`Timing.realistic`), and tests whose subject is not timing ask for :meth:`Timing.fast`.

Where each realistic figure comes from (the simulator runs on loopback, so each figure is the whole
delay a client of the live API sees, network included):

``handshake_ms`` = 300, from the start of the WebSocket upgrade to the 101.
    A new connection to api.openai.com costs three network round trips before the 101 (TCP, TLS
    1.3, the HTTP upgrade). Round trips to OpenAI's realtime edge measured 60-70 ms [webrtchacks],
    which gives ~200 ms; a TCP connect to api.openai.com measured 125 ms [openless] (where TLS then
    took 4.2 s behind SNI inspection: the tail is far longer), which gives ~375 ms. The relay's
    maintainers measured failures with an upstream that announced sessions ~0.3 s after the upgrade.
``session_created_ms`` = 5, from the 101 to ``session.created``.
    Captured live: 3-6 ms (the project's protocol reference, ``realtime-protocol.md`` §3.2 item 1).
``ack_ms`` = 50, before the answer to each client event the API acknowledges.
    One round trip: 60-70 ms to the realtime edge in January 2025, "improved since" [webrtchacks];
    ~50 ms in the maintainers' measurements.
``session_update_ms`` = 210, the extra work of a ``session.update`` on top of ``ack_ms``.
    Captured live: ``session.updated`` ~260 ms after ``session.update`` (§3.2 item 2): 50 + 210.
``first_delta_ms`` = 450, from ``response.created`` to the response's first output.
    The model's time to first token: time to first byte from the API is ~500 ms in US regions
    [forasoft], of which ``ack_ms`` has passed by ``response.created``. Reasoning models take
    longer: 1.12 s to first audio for gpt-realtime-2 at minimal reasoning [batch].
``transcription_ms`` = 300, from an utterance's commit to its first transcription delta, and as
    much again for every 6 s of audio in it. An estimate: the API publishes no figure; its
    transcriptions run asynchronously and arrive interleaved with later events (§3.2 item 5).
``rate_limits_ms`` = 43, from ``response.done`` to ``rate_limits.updated``.
    Captured live: ~43 ms (§3.2 item 3).

[webrtchacks] P. Hancke, "Measuring the response latency of OpenAI's WebRTC-based Realtime API",
    webrtcHacks, January 2025 (STUN round trips in Chrome's webrtc-internals),
    https://webrtchacks.com/measuring-the-response-latency-of-openais-webrtc-based-real-time-api/
[openless] https://github.com/Open-Less/openless/issues/998 (one machine on Windows 11, August 2026)
[forasoft] "OpenAI Realtime API voice agent production guide 2026", Fora Soft,
    https://www.forasoft.com/blog/article/openai-realtime-api-voice-agent-production-guide-2026
[batch] "OpenAI Challenges Speech-to-Speech Leaders", The Batch (Artificial Analysis figures),
    https://www.deeplearning.ai/the-batch/openai-challenges-speech-to-speech-leaders

Audio pacing is :attr:`SimulatorConfig.speed` (1.0 = real time), not a field here: it is the
speed of the stream once it flows, not a latency.

:class:`Outbox` applies the figures without blocking the socket reader: a client event is handled
at once (so appends behind it keep being read and buffered), and what it causes goes out after
its delay, in order behind everything sent before it, never reordered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, fields
from typing import Any

_log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]

# Replies queued at which senders wait for the queue to drain: a peer that stops reading slows the
# session down (TCP backpressure, as before the queue existed) instead of growing memory.
_QUEUE_HIGH = 256
# When the replies to the client event being handled may go out (loop time); None outside a
# handler. A context variable, so a response task started by a handler inherits its reply time.
_REPLY_AT: ContextVar[float | None] = ContextVar("sim_reply_at", default=None)


@dataclass(frozen=True)
class Timing:
    """Delays of the live Realtime API, in milliseconds (sources in the module docstring)."""

    handshake_ms: float = 300.0
    session_created_ms: float = 5.0
    ack_ms: float = 50.0
    session_update_ms: float = 210.0
    first_delta_ms: float = 450.0
    transcription_ms: float = 300.0
    rate_limits_ms: float = 43.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"{field.name} must be >= 0, got {value!r}")

    @classmethod
    def realistic(cls) -> Timing:
        """The live API's timing: the default."""
        return cls()

    @classmethod
    def fast(cls) -> Timing:
        """No delays at all: for tests where timing is irrelevant."""
        return cls(**{field.name: 0.0 for field in fields(cls)})


REALISTIC = Timing.realistic()


class _Replying:
    """Sets the reply time for a ``with`` block (a plain class: contextlib's generator managers
    write ``__traceback__`` on exceptions passing through, which frozen exceptions refuse)."""

    __slots__ = ("_at", "_token")
    _token: Token[float | None]

    def __init__(self, at: float) -> None:
        self._at = at

    def __enter__(self) -> None:
        self._token = _REPLY_AT.set(self._at)

    def __exit__(self, *exc: object) -> None:
        _REPLY_AT.reset(self._token)


@dataclass(slots=True)
class _Entry:
    due: float
    event: dict[str, Any]
    gap_s: float
    sent: asyncio.Future[None] | None = None


class Outbox:
    """One session's server events: each not before its due time, all in the order sent.

    With nothing queued and nothing due later, an event is delivered at once by its sender, so the
    fast profile and a steady audio stream take the same path as without the queue.
    """

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._queue: deque[_Entry] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._last_sent = 0.0  # loop time the last event went out

    def now(self) -> float:
        return self._loop.time()

    def replying(self, delay_s: float, *, since: float | None = None) -> _Replying:
        """While a client event is handled: what it causes goes out ``delay_s`` after it arrived."""
        return _Replying((self.now() if since is None else since) + delay_s)

    def delay_reply(self, extra_s: float) -> None:
        """The event being handled needs ``extra_s`` more before it is answered."""
        at = _REPLY_AT.get()
        if at is not None and extra_s > 0:
            _REPLY_AT.set(at + extra_s)

    @staticmethod
    def detach() -> None:
        """The calling task is no longer answering a client event: its sends are due at once."""
        _REPLY_AT.set(None)

    async def send(self, event: dict[str, Any], *, gap_s: float = 0.0) -> None:
        """Deliver ``event`` when due (the current reply time, if any) and ``gap_s`` after the
        event before it went out, behind everything sent before it.

        Returns once it is delivered or queued: a handler never waits for its own reply's delay.
        """
        now = self._loop.time()
        at = _REPLY_AT.get()
        if not self._queue and (at is None or at <= now) and self._last_sent + gap_s <= now:
            await self._deliver(event)
            self._last_sent = self._loop.time()
            return
        self._queue.append(_Entry(now if at is None else at, event, gap_s))
        if self._drainer is None:
            self._drainer = self._loop.create_task(self._drain(), name="sim-outbox")
        if len(self._queue) >= _QUEUE_HIGH:
            await self.flushed()

    async def flushed(self) -> None:
        """Wait until every event queued so far has been delivered."""
        if not self._queue:
            return
        last = self._queue[-1]
        if last.sent is None:
            last.sent = self._loop.create_future()
        # Shielded: a waiter cancelled (a response cut short) must not cancel it for the others.
        await asyncio.shield(last.sent)

    async def _drain(self) -> None:
        try:
            while self._queue:
                entry = self._queue[0]
                wait = max(entry.due, self._last_sent + entry.gap_s) - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    # Still at the head while it is delivered: a sender that finds the queue
                    # empty must not overtake it.
                    await self._deliver(entry.event)
                except Exception:  # task root: one bad event must not stop the rest
                    _log.exception("simulated session failed to send %s", entry.event.get("type"))
                finally:
                    self._last_sent = self._loop.time()
                    self._queue.popleft()
                    if entry.sent is not None and not entry.sent.done():
                        entry.sent.set_result(None)
        finally:
            self._drainer = None

    async def close(self) -> None:
        """The connection is gone: drop what is still queued."""
        drainer = self._drainer
        if drainer is not None:
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)
        for entry in self._queue:
            if entry.sent is not None and not entry.sent.done():
                entry.sent.set_result(None)
        self._queue.clear()
