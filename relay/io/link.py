"""One upstream WebSocket connection and what the relay knows about it.

A link starts in *collecting* mode: its frames wait in an inbox, read by the supervisor while it
replays onto the link (the client must not see the replay's echoes). :meth:`attach` hands it to
the relay session, which from then on gets every frame synchronously, the inbox first.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.core.websocket import NORMAL_CLOSURE, OP_TEXT
from relay.io.frame_path import MessageHandler
from relay.io.upstream import UpstreamTarget
from relay.io.websocket import WebSocketConnection


@dataclass(eq=False)
class UpstreamLink:
    """An open upstream session. The relay session may replace it several times in its life."""

    conn: WebSocketConnection
    target: UpstreamTarget
    opened_at: float
    session_id: str | None = None
    last_error_code: str | None = None
    closed_by_relay: bool = False
    _inbox: deque[bytes] = field(default_factory=deque)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.conn.set_handler(self._collect)
        self.conn.closed.add_done_callback(lambda _: self._arrived.set())

    # ------------------------------------------------------------------ collecting (replay)
    def _collect(self, opcode: int, data: bytes) -> None:
        if opcode == OP_TEXT:  # the API sends no binary frames; a replay has no use for them
            self._inbox.append(data)
            self._arrived.set()

    async def receive(self) -> bytes | None:
        """The next collected frame; None once the link is closed and nothing is left."""
        while not self._inbox:
            if self.conn.transport is None:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        return self._inbox.popleft()

    def attach(self, handler: MessageHandler, on_write_paused: Callable[[bool], None]) -> None:
        """Deliver every frame to ``handler`` from now on, starting with any still collected."""
        while self._inbox:
            handler(OP_TEXT, self._inbox.popleft())
        self.conn.set_handler(handler)
        self.conn.on_write_paused = on_write_paused

    def detach(self) -> None:
        """Frames of a replaced upstream are no longer anyone's; they are dropped, and its
        failures no longer end the session (which the connection then no longer references)."""
        self.conn.release()

    # ------------------------------------------------------------------ sending and closing
    def send(self, data: bytes) -> bool:
        """False when the upstream is closing or gone: the frame was not sent."""
        return self.conn.send(data)

    async def close(self, code: int = NORMAL_CLOSURE, message: bytes = b"") -> None:
        self.closed_by_relay = True
        await self.conn.close(code, message)

    def close_now(self, code: int = NORMAL_CLOSURE) -> None:
        """Close without waiting for the upstream's answer (when the caller cannot wait)."""
        self.closed_by_relay = True
        self.conn.close_now(code)

    @property
    def closed(self) -> bool:
        return self.conn.closing

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        if self.conn.transport is not None:
            self.conn.transport.set_write_buffer_limits(high=high, low=low)
