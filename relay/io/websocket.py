"""One WebSocket endpoint on an asyncio transport: the thin shell around ``relay.core.websocket``.

Why not aiohttp's WebSocket objects for the forwarding path: each message there crosses a queue,
a future and a task wake-up before the relay sees it, and each send is a coroutine. Measured on
this path (100 voice sessions), that machinery cost more than the relay's own work. Here a
message is handed to its handler synchronously from ``data_received`` and a send is one
``transport.write``. Flow control is the transport's own: ``pause_writing`` / ``resume_writing``
report a full or drained send buffer, and owners pause reading the other peer in answer (TCP
backpressure, no per-frame awaits). aiohttp still serves HTTP and routes the upgrade: the
handler checks the request, then takes the socket over (:func:`accept`).

A connection is a task root for its callbacks: an exception escaping a handler is passed to
``on_failure`` instead of the event loop.

The per-frame half (reading, sending, batches of frames that arrive in one read) is
``relay.io.frame_path``, compiled when built; this module is the rest.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from yarl import URL

from relay.core.websocket import (
    ABNORMAL_CLOSURE,
    NO_STATUS,
    NORMAL_CLOSURE,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    HandshakeError,
    ProtocolError,
    accept_key,
    check_client_request,
    check_server_response,
    client_request,
    close_payload,
    encode_frame,
    parse_close,
    parse_response,
    select_subprotocol,
)
from relay.io.frame_path import EARLY, FramePath, MessageHandler, begin_batch, end_batch

CLOSE_TIMEOUT_S = 5.0  # how long a close waits for the peer's answer before dropping the socket


@contextmanager
def batch() -> Iterator[None]:
    """Gather what is sent inside, each connection's frames written at once at the end (nested
    batches join the outer one). For bursts the relay makes itself: a resume's replayed events,
    the frames released after a hold (frames that arrive in one read are a batch already)."""
    gathered = begin_batch()
    try:
        yield
    finally:
        end_batch(gathered)


class WebSocketConnection(FramePath, asyncio.Protocol):
    """A WebSocket over a transport. ``client_side``: this end is the client (it masks)."""

    def __init__(
        self, *, client_side: bool, max_size: int, handshake: _ClientHandshake | None = None
    ) -> None:
        super().__init__(client_side, max_size)
        # The owner's callbacks. They hold the owner, which holds this connection: ``release``
        # cuts that cycle when the owner is done, so no collection has to.
        self.on_write_paused: Callable[[bool], None] = _ignore
        self.close_code: int | None = None  # the peer's close code; 1006 if lost without one
        self.close_reason = ""
        self.write_paused_since = 0.0  # when the send buffer went over its high-water mark
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.subprotocol: str | None = None
        self._failure: ProtocolError | None = None  # a bad frame behind early messages
        self._read_pauses: set[str] = set()
        self._previous: asyncio.BaseProtocol | None = None  # aiohttp's, told when the socket goes
        self._handshake = handshake
        self.handshaking = handshake is not None
        self._last_seen = time.monotonic()
        self._ping_sent = 0.0

    # ------------------------------------------------------------------ ownership
    def set_handler(self, handler: MessageHandler) -> None:
        """Deliver text and binary messages to ``handler`` from now on, first any that waited
        (and then fail the connection if a bad frame came after them)."""
        self._handler = handler
        early, self._early, self._early_bytes = self._early, [], 0
        try:
            for opcode, payload in early:
                handler(opcode, payload)
        finally:
            if self._failure is not None:
                self._protocol_error(self._failure)
            else:
                self.resume_reading(EARLY)

    def release(self) -> None:
        """Forget the owner (its session is over): what still arrives is dropped, a failure aborts."""
        self._handler = _discard
        self.lane = None
        self.on_failure = None
        self.on_write_paused = _ignore
        self._drop_early()

    def take_over(self, transport: asyncio.Transport, previous: asyncio.BaseProtocol | None) -> None:
        """Become the protocol of an already-connected transport (a server-side upgrade)."""
        self._previous = previous
        transport.set_protocol(self)
        self.connection_made(transport)

    # ------------------------------------------------------------------ sending
    def ping(self) -> None:
        if self.transport is not None and not self.closing:
            self._write(encode_frame(b"", OP_PING, mask=self.client_side))

    async def close(self, code: int = NORMAL_CLOSURE, reason: bytes = b"") -> None:
        """Send a close frame, then wait (bounded) for the peer's answer and the socket's end."""
        if self._failure is not None:  # the peer broke the protocol: that is the close to send
            self._protocol_error(self._failure)
        if self.transport is not None and not self.closing:
            self.closing = True
            self._drop_early()  # no handler will take them now; what follows is dropped too
            frame = encode_frame(close_payload(code, reason), OP_CLOSE, mask=self.client_side)
            self._write(frame)
            self.resume_reading_all()  # the peer's close frame must be read
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT_S)
        except TimeoutError:
            self.abort()

    def close_now(self, code: int = NORMAL_CLOSURE) -> None:
        """Send a close frame and end the connection once it is written, without waiting."""
        if self.transport is not None:
            if not self.closing:
                self.closing = True
                self._drop_early()
                frame = encode_frame(close_payload(code), OP_CLOSE, mask=self.client_side)
                self._write(frame)
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ reading control
    def pause_reading(self, reason: str) -> None:
        """Stop reading for ``reason``; reading resumes once every reason is withdrawn."""
        if not self._read_pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._read_pauses.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._read_pauses:
            return
        self._read_pauses.discard(reason)
        if not self._read_pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def resume_reading_all(self) -> None:
        for reason in list(self._read_pauses):
            self.resume_reading(reason)

    def paused_for(self, reason: str) -> bool:
        return reason in self._read_pauses

    # ------------------------------------------------------------------ liveness
    def keepalive(self, now: float, interval: float) -> bool:
        """Called regularly: pings a peer silent for ``interval``; False once it is dead.

        Anything received counts as a sign of life (as aiohttp's heartbeat does); a ping not
        answered within half the interval means the peer is gone. While the relay itself is not
        reading this peer (backpressure), its answers cannot arrive, so it is not judged.
        """
        if self._read_pauses:
            self._last_seen, self._ping_sent = now, 0.0
            return True
        if self.seen:
            self.seen, self._last_seen, self._ping_sent = False, now, 0.0
            return True
        if self._ping_sent:
            return now - self._ping_sent <= interval / 2
        if now - self._last_seen >= interval:
            self.ping()
            self._ping_sent = now
        return True

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self._handshake is not None:
            self.transport.write(self._handshake.request)

    def _through_handshake(self, data: bytes) -> bytes:
        """A client's bytes before the server's 101 is whole: what came after it (frames)."""
        assert self._handshake is not None
        try:
            data = self._handshake.received(data)
        except HandshakeError as exc:
            self._handshake_failed(exc)
            return b""
        if self._handshake.done:
            self._handshake, self.handshaking = None, False
        return data

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = ABNORMAL_CLOSURE
        self.transport = None
        self.closing = True
        if self._handler is not None:  # nothing more can arrive: the owner's callbacks can go
            self.release()
        if self._handshake is not None:
            self._handshake_failed(exc or ConnectionResetError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        if self._previous is not None:
            self._previous.connection_lost(exc)
            self._previous = None

    def pause_writing(self) -> None:
        self.write_paused_since = time.monotonic()
        self.on_write_paused(True)

    def resume_writing(self) -> None:
        self.write_paused_since = 0.0
        self.on_write_paused(False)

    # ------------------------------------------------------------------ internals
    def _drop_early(self) -> None:
        self._early, self._early_bytes = [], 0

    def _pong(self, payload: bytes) -> None:
        if self.transport is not None and not self.closing:
            self._write(encode_frame(payload, OP_PONG, mask=self.client_side))

    def _close_received(self, payload: bytes) -> None:
        code, reason = parse_close(payload)
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self.transport is None:
            return
        if not self.closing:  # the peer closed first: answer with its code (section 5.5.1)
            self.closing = True
            answer = close_payload(code) if code != NO_STATUS else b""
            self._write(encode_frame(answer, OP_CLOSE, mask=self.client_side))
        self.transport.close()  # flushes what is buffered, then connection_lost

    def _fail(self, exc: ProtocolError) -> None:
        """Fail the connection once the owner has seen the messages the bad frame came after."""
        if self._early and self.transport is not None:  # no handler yet: set_handler fails it
            self._failure = exc
            self.transport.pause_reading()  # the reader is broken: nothing more is read
        else:
            self._protocol_error(exc)

    def _protocol_error(self, exc: ProtocolError) -> None:
        self._failure = None
        if self.transport is None:
            return
        if self.close_code is None:
            self.close_code, self.close_reason = exc.code, exc.reason
        if not self.closing:
            self.closing = True
            frame = close_payload(exc.code, exc.reason.encode())  # cut to fit by close_payload
            self._write(encode_frame(frame, OP_CLOSE, mask=self.client_side))
        self.transport.close()

    def _handshake_failed(self, exc: BaseException) -> None:
        handshake, self._handshake, self.handshaking = self._handshake, None, False
        if handshake is not None and not handshake.opened.done():
            handshake.opened.set_exception(exc)
        self.abort()


def _ignore(paused: bool) -> None:
    return None


def _discard(opcode: int, payload: bytes) -> None:
    return None


# ---------------------------------------------------------------------------------- server side
@dataclass(frozen=True, slots=True)
class Upgraded:
    """An accepted upgrade: the connection, and the 101 response the handler returns to aiohttp."""

    connection: WebSocketConnection
    response: web.StreamResponse


async def accept(
    request: web.Request,
    *,
    subprotocols: Iterable[str],
    headers: Mapping[str, str],
    max_size: int,
    write_limits: tuple[int, int],
) -> Upgraded | web.Response:
    """Answer an upgrade request with 101 and take its socket over; a bad request gets 400/426."""
    try:
        key = check_client_request(request.headers)
    except HandshakeError as exc:
        extra = {"Sec-WebSocket-Version": "13"} if exc.status == 426 else {}
        return web.Response(status=exc.status, text=str(exc), headers=extra)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client left before the upgrade")
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    chosen = select_subprotocol(offered, subprotocols)
    response = web.StreamResponse(
        status=101,
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Accept": accept_key(key),
            **({"Sec-WebSocket-Protocol": chosen} if chosen else {}),
            **headers,
        },
    )
    response.force_close()
    conn = WebSocketConnection(client_side=False, max_size=max_size)
    conn.subprotocol = chosen
    # Before the 101 goes out: the client may send frames as soon as it reads it (section 4.1),
    # and they must reach this connection, not aiohttp's HTTP parser.
    conn.take_over(transport, request.protocol)
    transport.set_write_buffer_limits(high=write_limits[0], low=write_limits[1])
    await response.prepare(request)
    return Upgraded(conn, response)


# ---------------------------------------------------------------------------------- client side
class _ClientHandshake:
    """The client's upgrade request and the wait for the server's 101."""

    def __init__(self, request: bytes, key: str) -> None:
        self.request = request
        self.key = key
        self.buffer = b""
        self.done = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A failure after connect() stopped waiting (its timeout) has no one left to read it.
        self.opened.add_done_callback(lambda f: f.cancelled() or f.exception())

    def received(self, data: bytes) -> bytes:
        """Consume the response head; returns the bytes after it (frames), if it is complete."""
        self.buffer += data
        response = parse_response(self.buffer)
        if response is None:
            return b""
        check_server_response(response, self.key)
        self.done = True
        self.opened.set_result(None)
        return response.rest


async def connect(
    url: URL,
    headers: Mapping[str, str],
    *,
    max_size: int,
    open_timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
) -> WebSocketConnection:
    """Open a client WebSocket to ``url`` (ws:// or wss://).

    Raises HandshakeError (with the HTTP status) when the server refuses, ssl.SSLError when TLS
    fails, OSError or TimeoutError when it cannot be reached in ``open_timeout_s``.
    """
    secure = url.scheme in ("wss", "https")
    host = url.raw_host or "127.0.0.1"
    port = url.port or (443 if secure else 80)
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = _ClientHandshake(client_request(_host_header(url), url.raw_path_qs, key, headers), key)
    conn = WebSocketConnection(client_side=True, max_size=max_size, handshake=handshake)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(open_timeout_s):
            await loop.create_connection(
                lambda: conn,
                host,
                port,
                ssl=(ssl_context or default_ssl_context()) if secure else None,
                server_hostname=url.host if secure else None,
            )
            await handshake.opened
    except BaseException:
        conn.abort()
        raise
    return conn


def _host_header(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{url.explicit_port}" if url.explicit_port is not None else host


_ssl_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The system's trust store, loaded once (it takes milliseconds; a reconnect storm must not)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context
