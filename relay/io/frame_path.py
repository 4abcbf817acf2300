"""A WebSocket connection's per-frame path: frames read and handed on, frames sent, batches.

The half of ``relay.io.websocket.WebSocketConnection`` that runs for every frame, apart from the
rest (opening, closing, pausing, liveness) so that it can be compiled: ``relay/io/_frame_path.pyx``
is its twin, built by ``pip install`` as ``relay.core._speedups`` is, and this module is the
reference and the fallback (``RELAY_NO_EXTENSIONS``). ``lane``, when set, is offered each text
message first: the relay's shortcut for its commonest frames (``relay.io.lanes``), so that they
need no Python call at all in the compiled build.

Batches: frames that arrive in one read are handled as one, and whatever they make the relay
send, to any connection, is gathered and written once per connection at the batch's end (one
``writev`` instead of a ``write`` per frame; a loopback write costs ~10 us of kernel time). Order
per connection is kept: anything else written to a connection (a pong, a close) first writes
what was gathered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from relay.core import speedups
from relay.core.websocket import (
    LARGE_FRAME,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameReader,
    Message,
    ProtocolError,
    encode_frame,
    encode_frame_parts,
)

# Messages kept for a handler not set yet (the client side's first frames, a server side before
# its session starts): past this many, or this many bytes, reading pauses until it takes them.
MAX_EARLY_MESSAGES = 16
MAX_EARLY_BYTES = 1024 * 1024
EARLY = "early"  # the read-pause reason while the early messages wait

MessageHandler = Callable[[int, bytes], None]


class Lane(Protocol):
    def take(self, data: bytes) -> bool:
        """True when the text message ``data`` was handled in full; False: the handler's."""


# The batch being handled: the connections with frames gathered. The relay is one thread and a
# batch one synchronous callback, so one module-level batch is it.
_gathering: list[PyFramePath] | None = None


def py_begin_batch() -> list[PyFramePath] | None:
    """Start a batch; None when one is already running (this one joins it)."""
    global _gathering
    if _gathering is not None:
        return None
    _gathering = []
    return _gathering


def py_end_batch(gathered: list[PyFramePath] | None) -> None:
    global _gathering
    if gathered is None:
        return
    _gathering = None
    for conn in gathered:
        conn.flush()


class PyFramePath:
    """The per-frame methods; the rest of the connection (``relay.io.websocket``) subclasses it
    and provides the rare paths this calls: ``_through_handshake``, ``_close_received``,
    ``_pong``, ``_fail``, ``_protocol_error``, ``pause_reading`` and ``abort``."""

    def __init__(self, client_side: bool, max_size: int) -> None:
        self.client_side = client_side
        self.reader = FrameReader(masked=not client_side, max_size=max_size)
        self.transport: asyncio.Transport | None = None
        self.closing = False  # a close frame was sent or received: no more data goes out
        self.handshaking = False  # a client waiting for the server's 101
        self.seen = False  # anything received since the last keepalive check
        self.lane: Lane | None = None
        # The owner's failure callback (None: abort).
        self.on_failure: Callable[[BaseException], None] | None = None
        self._handler: MessageHandler | None = None
        self._early: list[Message] = []  # messages that arrived before a handler was set
        self._early_bytes = 0
        self._gathered: list[bytes] = []  # frames sent during a batch, written at its end

    # ------------------------------------------------------------------ sending
    def send(self, data: bytes, opcode: int = OP_TEXT) -> bool:
        """Queue one message; False if the connection is closing or gone (nothing was sent)."""
        transport = self.transport
        if transport is None or self.closing:
            return False
        if len(data) < LARGE_FRAME:
            frame = encode_frame(data, opcode, mask=self.client_side)
            if _gathering is None:
                transport.write(frame)
            else:
                if not self._gathered:
                    _gathering.append(self)
                self._gathered.append(frame)
        else:  # header and payload apart: joining them would copy the whole payload once more
            header, body = encode_frame_parts(data, opcode, mask=self.client_side)
            self._write(header)
            transport.write(body)
        return True

    def _write(self, data: bytes) -> None:
        """Write ``data`` after anything gathered: the order on the wire is the order sent.
        Every close goes through here, and nothing is gathered once closing: so a connection
        never closes with frames left behind."""
        assert self.transport is not None
        if self._gathered:
            self.flush()
        self.transport.write(data)

    def flush(self) -> None:
        """Write what a batch gathered for this connection, at once."""
        gathered, self._gathered = self._gathered, []
        # Aborted during the batch (a stuck peer, a protocol error): what it gathered is dropped
        # with the socket, as it would have been on its way out.
        if gathered and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(gathered)

    # ------------------------------------------------------------------ receiving
    def data_received(self, data: bytes) -> None:
        self.seen = True
        this: Any = self  # the subclass's rare paths
        failure: ProtocolError | None = None
        try:
            if self.handshaking:
                data = this._through_handshake(data)
                if not data:
                    return
            try:
                messages = self.reader.feed(data)
            except ProtocolError as exc:  # what came before the bad frame is still delivered
                messages, failure = exc.messages, exc
            # Frames that came together are a batch (not a ``with`` block: the context manager's
            # generator showed in the profile; try/finally costs nothing until something raises).
            gathered = py_begin_batch() if len(messages) > 1 else None
            closed = False
            try:
                for opcode, payload in messages:
                    if opcode < OP_CLOSE:  # text or binary
                        if self.closing:
                            # Our close is sent: data still arriving is read only to reach the
                            # peer's close frame, and dropped (RFC 6455 section 1.4), never kept.
                            continue
                        if self._handler is None:
                            self._early.append((opcode, payload))
                            self._early_bytes += len(payload)
                            if len(self._early) >= MAX_EARLY_MESSAGES or self._early_bytes >= MAX_EARLY_BYTES:
                                this.pause_reading(EARLY)
                        elif opcode != OP_TEXT or self.lane is None or not self.lane.take(payload):
                            self._handler(opcode, payload)
                    elif opcode == OP_CLOSE:
                        this._close_received(payload)
                        closed = True
                        break  # anything after the peer's close is not read (section 5.5.1)
                    elif opcode == OP_PING:
                        this._pong(payload)
                    # OP_PONG: receiving it already counted as a sign of life
            finally:
                if gathered is not None:
                    py_end_batch(gathered)
            if failure is not None and not closed:
                this._fail(failure)
        except ProtocolError as exc:  # a bad close frame
            this._protocol_error(exc)
        except Exception as exc:  # a handler's bug: its owner decides, the loop never sees it
            if self.on_failure is None:
                this.abort()
            else:
                self.on_failure(exc)


if TYPE_CHECKING:
    FramePath = PyFramePath
    begin_batch, end_batch = py_begin_batch, py_end_batch
else:
    _compiled = speedups.compiled("relay.io._frame_path")
    if _compiled is None:
        FramePath, begin_batch, end_batch = PyFramePath, py_begin_batch, py_end_batch
    else:
        FramePath, begin_batch, end_batch = _compiled.FramePath, _compiled.begin_batch, _compiled.end_batch
