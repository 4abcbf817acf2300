"""One simulated session's WebSocket: client frames in order to the session, plain appends at once.

The simulator is the default upstream and the benchmark's: it shares a core with the load
generator, so its per-frame path is the relay's own (``relay.io.websocket``): a message reaches
it from the socket's callback and a send is one write. Everything that may wait (a reply, a VAD
turn, a fault) runs in order on the session's reader task; a plain append with nothing queued
before it is taken synchronously, which keeps the order and skips a task wake-up per 20 ms frame.
Sends wait while the peer is not reading, and a full inbox stops reading the socket: both are
TCP backpressure, as a real server exerts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from relay.core.websocket import OP_TEXT
from relay.io.websocket import WebSocketConnection

_log = logging.getLogger(__name__)

_INBOX_HIGH = 64  # queued messages at which the socket stops being read
_INBOX_LOW = 16  # ... and starts again

Arrival = Callable[[bytes], None]  # every text frame, when it arrives (inspection, the probe)
TakeNow = Callable[[bytes], bool]  # True: the frame was fully handled synchronously


class SimChannel:
    def __init__(
        self, conn: WebSocketConnection, *, arrived: Arrival, take_now: TakeNow, ping_interval_s: float
    ) -> None:
        self.conn = conn
        self._arrived = arrived
        self._take_now = take_now
        self._inbox: deque[tuple[int, bytes]] = deque()
        self._loop = asyncio.get_running_loop()
        self._wake: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._ready = False  # until the session has greeted the client, everything queues
        self._busy = False  # the reader task is handling a message
        self._stalled_until = 0.0
        self._ping_interval_s = ping_interval_s
        conn.on_write_paused = self._write_paused
        conn.on_failure = self._failed
        conn.closed.add_done_callback(self._gone)
        conn.set_handler(self._received)
        if ping_interval_s > 0:
            self._loop.call_later(ping_interval_s / 4, self._keepalive)

    # ------------------------------------------------------------------ reading
    def start(self) -> None:
        """The session has sent ``session.created``: frames may now be taken at once."""
        self._ready = True

    async def messages(self) -> AsyncIterator[tuple[int, bytes]]:
        """Queued messages in arrival order, until the connection is gone; none during a stall."""
        while True:
            while self._inbox:
                stalled = self._stalled_until - self._loop.time()
                if stalled > 0:  # what was read before the stall waits it out too
                    await asyncio.sleep(stalled)
                    continue
                message = self._inbox.popleft()
                if len(self._inbox) <= _INBOX_LOW:
                    self.conn.resume_reading("inbox")
                self._busy = True
                try:
                    yield message
                finally:
                    self._busy = False
            if self.conn.closed.done():
                return
            self._wake = self._loop.create_future()
            await self._wake

    def stall(self, seconds: float) -> None:
        """Stop reading the socket for ``seconds``: the peer's sends back up in TCP."""
        self._stalled_until = self._loop.time() + seconds
        self.conn.pause_reading("stall")
        self._loop.call_later(seconds, self.conn.resume_reading, "stall")

    def _received(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            self._arrived(payload)
            if (
                self._ready
                and not self._inbox
                and not self._busy
                and self._loop.time() >= self._stalled_until
                and self._take_now(payload)
            ):
                return
        self._inbox.append((opcode, payload))
        if len(self._inbox) >= _INBOX_HIGH:
            self.conn.pause_reading("inbox")
        self._wakeup()

    def _gone(self, _: asyncio.Future[None]) -> None:
        self._wakeup()  # the reader ends
        self._write_paused(False)  # senders find the connection closed

    def _wakeup(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    # ------------------------------------------------------------------ writing
    async def send(self, frame: bytes) -> bool:
        """Send one text frame once the peer reads again; False if the connection is gone."""
        while self._writable is not None and not self.conn.closing:
            await self._writable
        return self.conn.send(frame)

    def _write_paused(self, paused: bool) -> None:
        if paused:
            if self._writable is None:
                self._writable = self._loop.create_future()
            return
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # ------------------------------------------------------------------ liveness
    def _keepalive(self) -> None:
        if self.conn.closed.done():
            return
        if not self.conn.keepalive(time.monotonic(), self._ping_interval_s):
            _log.info("simulated session: the client stopped answering pings")
            self.conn.abort()
            return
        self._loop.call_later(self._ping_interval_s / 4, self._keepalive)

    def _failed(self, exc: BaseException) -> None:
        """A bug on the synchronous path: logged, and the connection ends as the API's would."""
        _log.error("simulated session failed on a client frame", exc_info=exc)
        self.conn.abort()
