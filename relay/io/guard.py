"""The listening socket's guard against slow clients: a request-head timeout and caps.

aiohttp has no header timeout: a client that opens a connection and sends its request head one
byte at a time (Slowloris), or nothing at all, holds a socket for as long as aiohttp's keep-alive
timeout. The guard is a thin protocol in front of aiohttp's request handler. It forwards every
callback, closes the connection when no complete head (an empty line) arrived within
``header_timeout_s``, and refuses new connections at once while too many heads are stalled
(unfinished after ``STALLED_AFTER_S``), globally or from one peer. Only stalled heads count: an
honest client sends its head with the handshake, and a burst of them from one address (a load
test, a NAT, a proxy opening many upgrades at once) has hundreds unfinished for a millisecond.
When the first head is complete the guard hands the transport to aiohttp's handler
(``transport.set_protocol``) and is gone: keep-alive requests (bounded by aiohttp's
``keepalive_timeout``), the relay's WebSocket take-over and TLS never see it again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from relay.observability.logging import get_logger
from relay.observability.metrics import RelayMetrics

_log = get_logger()

HEAD_ENDS = (b"\n\r\n", b"\n\n")  # the empty line after the headers (bare LF tolerated)
STALLED_AFTER_S = 1.0  # a head unfinished this long counts against the caps


def peer_key(address: str | None) -> str:
    """The unit a peer is limited by: an IPv4 address, or an IPv6 /64 (one host's usual share)."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LogThrottle:
    """At most one line per key per interval, and ``max_lines`` per interval overall.

    A flood costs a few log lines, not one per attempt; the metrics still count every one.
    ``allow`` returns None to suppress, else how many were suppressed for the key since its last
    line.
    """

    def __init__(self, interval_s: float = 10.0, max_keys: int = 1024, max_lines: int = 100) -> None:
        self.interval_s = interval_s
        self._keys: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._max_keys = max_keys
        self._max_lines = max_lines
        self._window = (0.0, 0)  # start of the current interval, lines written in it

    def allow(self, key: str, now: float | None = None) -> int | None:
        now = time.monotonic() if now is None else now
        last, suppressed = self._keys.get(key, (-self.interval_s, 0))
        start, lines = self._window
        if now - start >= self.interval_s:
            start, lines = now, 0
        self._window = (start, lines)
        allowed = now - last >= self.interval_s and lines < self._max_lines
        if allowed:
            self._window = (start, lines + 1)
            self._keys[key] = (now, 0)
        else:
            self._keys[key] = (last, suppressed + 1)
        self._keys.move_to_end(key)
        while len(self._keys) > self._max_keys:  # the stalest peers are forgotten first
            self._keys.popitem(last=False)
        return suppressed if allowed else None


class MalformedRequestLog(logging.Filter):
    """aiohttp logs a traceback at ERROR for every request it cannot parse (and answers 400), so
    a client can write one per connection. This filter for ``aiohttp.server`` keeps one short
    warning per peer every interval instead; other errors (the relay's own bugs) pass untouched."""

    def __init__(self) -> None:
        super().__init__()
        self._throttle = LogThrottle()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        peer = peer_key(str(remote) if remote else None)
        suppressed = self._throttle.allow(peer)
        if suppressed is None:
            return False
        record.msg = "malformed request from %s answered 400 (%s; %d more not logged)"
        record.args = (peer, type(exc).__name__, suppressed)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class EdgeGuard:
    """Counts unfinished request heads for every connection of one listening socket."""

    def __init__(
        self,
        server: Callable[[], asyncio.Protocol],
        *,
        header_timeout_s: float,
        max_unfinished: int,
        max_unfinished_per_peer: int,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self.server = server
        self.header_timeout_s = header_timeout_s
        self.max_unfinished = max_unfinished
        self.max_unfinished_per_peer = max_unfinished_per_peer
        self.metrics = metrics
        self.stalled_after_s = min(STALLED_AFTER_S, header_timeout_s)
        self.unfinished = 0
        self.stalled = 0
        self._stalled_per_peer: dict[str, int] = {}
        self._log = LogThrottle()

    def __call__(self) -> GuardedConnection:
        return GuardedConnection(self)

    def admit(self, peer: str) -> str | None:
        """Count a new connection's head as unfinished; the refusal reason if over a cap."""
        if self.stalled >= self.max_unfinished:
            return "unfinished_heads"
        if self._stalled_per_peer.get(peer, 0) >= self.max_unfinished_per_peer:
            return "peer_unfinished_heads"
        self.unfinished += 1
        if self.metrics is not None:
            self.metrics.edge_unfinished_heads.inc()
        return None

    def stall(self, peer: str) -> None:
        """A head still unfinished after ``stalled_after_s``: it counts against the caps."""
        self.stalled += 1
        self._stalled_per_peer[peer] = self._stalled_per_peer.get(peer, 0) + 1

    def release(self, peer: str, *, stalled: bool) -> None:
        self.unfinished -= 1
        if self.metrics is not None:
            self.metrics.edge_unfinished_heads.dec()
        if not stalled:
            return
        self.stalled -= 1
        left = self._stalled_per_peer[peer] - 1
        if left:
            self._stalled_per_peer[peer] = left
        else:
            del self._stalled_per_peer[peer]

    def refused(self, reason: str, peer: str) -> None:
        if self.metrics is not None:
            self.metrics.edge_refusals_total.labels(reason).inc()
        suppressed = self._log.allow(f"{reason} {peer}")
        if suppressed is not None:
            _log.warning("edge_refusal", reason=reason, peer=peer, suppressed=suppressed)


class GuardedConnection(asyncio.Protocol):
    """One connection until its first request head is complete; then aiohttp's handler alone."""

    __slots__ = ("_guard", "_inner", "_peer", "_stalled", "_tail", "_timer", "_transport")

    def __init__(self, guard: EdgeGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._timer: asyncio.TimerHandle | None = None  # the head's stall, then its timeout
        self._stalled = False
        self._tail = b""  # the last bytes seen, for an empty line split across reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        self._peer = peer_key(peername[0] if isinstance(peername, tuple) else None)
        refusal = self._guard.admit(self._peer)
        if refusal is not None:
            self._guard.refused(refusal, self._peer)
            self._transport.abort()  # closed at once: a refused socket costs nothing more
            return
        self._timer = asyncio.get_running_loop().call_later(self._guard.stalled_after_s, self._stall)
        self._inner = self._guard.server()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            return
        # Empty lines before the request line do not end a head (else "\r\n\r\n" then a trickle
        # would slip past); once a byte of the head is in, the tail is never empty.
        seen = data if self._tail else data.lstrip(b"\r\n")
        if seen:
            seam = self._tail + seen[:2]
            if any(end in seam or end in seen for end in HEAD_ENDS):
                self._hand_over(inner)
            else:
                self._tail = (self._tail + seen)[-2:]
        inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._guard.release(self._peer, stalled=self._stalled)
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def _hand_over(self, inner: asyncio.Protocol) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._guard.release(self._peer, stalled=self._stalled)
        if self._transport is not None:
            self._transport.set_protocol(inner)  # from now on aiohttp's handler alone
        self._transport = None
        self._inner = None

    def _stall(self) -> None:
        guard = self._guard
        self._stalled = True
        guard.stall(self._peer)
        self._timer = asyncio.get_running_loop().call_later(
            guard.header_timeout_s - guard.stalled_after_s, self._expire
        )

    def _expire(self) -> None:
        self._timer = None
        self._guard.release(self._peer, stalled=self._stalled)
        self._guard.refused("header_timeout", self._peer)
        if self._transport is not None:
            self._transport.abort()


class GuardedSite(web.BaseSite):
    """aiohttp's TCPSite with the guard in front of every connection (and a TLS handshake bound
    by the same timeout as the request head)."""

    __slots__ = ("_guard_options", "_host", "_port", "_reuse_port", "guard")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        header_timeout_s: float,
        max_unfinished: int,
        max_unfinished_per_peer: int,
        metrics: RelayMetrics | None = None,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port  # several worker processes on one port
        self._guard_options = (header_timeout_s, max_unfinished, max_unfinished_per_peer, metrics)
        self.guard: EdgeGuard | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0)."""
        return self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        timeout, max_unfinished, per_peer, metrics = self._guard_options
        self.guard = EdgeGuard(
            server,
            header_timeout_s=timeout,
            max_unfinished=max_unfinished,
            max_unfinished_per_peer=per_peer,
            metrics=metrics,
        )
        self._server = await asyncio.get_running_loop().create_server(
            self.guard,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=timeout if self._ssl_context is not None else None,
            reuse_port=self._reuse_port or None,
        )
        sockets = self._server.sockets
        if sockets:
            self._port = int(sockets[0].getsockname()[1])
