"""The load generator: many voice apps driven from one event loop, framed by hand.

The generator shares a core with the simulator and must cost far less than what it measures. A
general WebSocket client spends tens of microseconds per message on locks, futures and a task
wake-up per send; at 200 sessions x 50 appends/s that alone saturates a core and turns the
baseline into generator noise. So each app is an ``asyncio.Protocol`` that writes complete,
masked frames straight to its transport (RFC 6455 client framing, a random mask key per
connection, masking in C), and one scheduler sends every session's appends on time from a heap
instead of one timer per session. What the servers see is an ordinary browser-like client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import heapq
import math
import os
import struct
import time
from collections import Counter
from collections.abc import Callable, ItemsView, Iterator, ValuesView
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
import orjson
from websockets.speedups import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_TEXT, _OP_CLOSE, _OP_PING = 0x1, 0x8, 0x9
_CONTINUATION, _OP_PONG = 0x0, 0xA
_RESPONSE_DONE = b'{"type":"response.done"'


def client_frame(payload: bytes, opcode: int = _OP_TEXT, key: bytes | None = None) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2)."""
    key = key or os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + key + apply_mask(payload, key)


class StampLog:
    """One direction's send or receive stamps: ``log[event_id] = time`` appends to two flat
    lists, and reading it sees a dict (the last stamp of each id), made once per change.

    A dict written per frame doubles its table at each power of two, and each doubling copies it
    with the load process stopped: at 380 sessions those copies held it 14, 28 and 53 ms, 2.4,
    4.8 and 9.6 s into a window, and the frames in flight then wore the delay as the relay's
    (docs/benchmark.md, fourteenth stop). A list grows by a pointer copy, a hundredth of that.
    """

    __slots__ = ("_built", "_dict", "_keys", "_times")

    def __init__(self) -> None:
        self._keys: list[str] = []
        self._times: list[float] = []
        self._dict: dict[str, float] = {}
        self._built = 0

    def __setitem__(self, key: str, at: float) -> None:
        self._keys.append(key)
        self._times.append(at)

    def count(self) -> int:
        """Stamps taken so far, repeats included (cheap: no dict is made)."""
        return len(self._keys)

    def mapping(self) -> dict[str, float]:
        if self._built != len(self._keys):
            self._dict, self._built = dict(zip(self._keys, self._times, strict=True)), len(self._keys)
        return self._dict

    def __len__(self) -> int:
        return len(self.mapping())

    def __contains__(self, key: object) -> bool:
        return key in self.mapping()

    def __getitem__(self, key: str) -> float:
        return self.mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.mapping())

    def values(self) -> ValuesView[float]:
        return self.mapping().values()

    def items(self) -> ItemsView[str, float]:
        return self.mapping().items()


@dataclass
class Stamps:
    """Send/receive stamps of every frame, keyed by its event id, for one path."""

    c2u_sent: StampLog = field(default_factory=StampLog)
    c2u_recv: StampLog = field(default_factory=StampLog)
    u2c_sent: StampLog = field(default_factory=StampLog)
    u2c_recv: StampLog = field(default_factory=StampLog)
    response_statuses: Counter[str] = field(default_factory=Counter)  # of response.done, at the apps

    def probe(self, kind: str, frame: bytes) -> None:
        """The simulator's hook: when a client frame arrived, when an audio delta left."""
        now = time.perf_counter()
        if kind == "send" and b'"response.output_audio.delta"' not in frame[:40]:
            return  # only audio deltas are timed downstream
        key = event_id(frame)
        if key is None:
            return
        if kind == "recv" and key.startswith("b"):
            self.c2u_recv[key] = now
        elif kind == "send":
            self.u2c_sent[key] = now

    def latencies(self, direction: str) -> npt.NDArray[np.float64]:
        sent, recv = (self.c2u_sent, self.c2u_recv) if direction == "c2u" else (self.u2c_sent, self.u2c_recv)
        sent_at, recv_at = sent.mapping(), recv.mapping()
        delays = [recv_at[k] - at for k, at in sent_at.items() if k in recv_at]
        return np.array(delays, dtype=np.float64) * 1000

    def lost(self) -> int:
        pairs = ((self.c2u_sent, self.c2u_recv), (self.u2c_sent, self.u2c_recv))
        return sum(len(sent.mapping().keys() - recv.mapping().keys()) for sent, recv in pairs)

    def moved(self) -> int:
        """Stamps taken on the way so far (polled while frames may still be in flight: no dict)."""
        return self.c2u_recv.count() + self.u2c_recv.count() + self.u2c_sent.count()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection in the load process while a path is measured.

    Generator and simulator share this process, and its heap grows with every stamp: a full
    collection here stopped both for 39-138 ms mid-measurement (timed with ``gc.callbacks`` in an
    overload run), which the stamps then charged to whichever path was being measured. The
    garbage waits for the end of the window instead (tens of MB at most).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        gc.collect()


_TICK_S = 0.002  # the load process's own clock check
_STALL_MS = 5.0  # a check this late is a stall of the load process itself


async def own_stalls(stalls: list[tuple[float, float]]) -> None:
    """Log when this process's event loop ran a short timer late: while it was stopped, the
    frames in flight waited too, and were stamped as the relay's delay (docs/benchmark.md,
    fourteenth stop). ``(perf_counter, ms late)`` per stall."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + _TICK_S
        await asyncio.sleep(_TICK_S)
        late_ms = (loop.time() - due) * 1000
        if late_ms >= _STALL_MS:
            stalls.append((time.perf_counter(), late_ms))


async def settle(clock: Stamps, quiet_s: float = 1.0, limit_s: float = 15.0) -> None:
    """Wait until no frame has moved for ``quiet_s`` (bounded): nothing is counted lost in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    last = -1
    while loop.time() < deadline:
        moved = clock.moved()
        if moved == last:
            return
        last = moved
        await asyncio.sleep(quiet_s)


def event_id(frame: bytes) -> str | None:
    start = frame.find(b'"event_id":"')
    if start < 0:
        return None
    start += 12
    return frame[start : frame.find(b'"', start)].decode()


class VoiceApp(asyncio.Protocol):
    """One app's socket: handshake, then frames parsed as they arrive; audio deltas stamped."""

    def __init__(self, stamps: Stamps, delta_marker: bytes) -> None:
        self.stamps = stamps
        self.marker = delta_marker
        self.key = os.urandom(4)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.message = bytearray()
        self.upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.handshake = b""
        self.accept = b""
        self.refusal = ""  # the response head of a refused upgrade

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.handshake)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded and not self._upgrade():
            return
        self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    # ------------------------------------------------------------------ sending
    def send(self, text: bytes) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(text, key=self.key))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(struct.pack("!H", 1000), _OP_CLOSE, self.key))

    # ------------------------------------------------------------------ receiving
    def _upgrade(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status = head.split("\r\n", 1)[0]
        if " 101 " not in status + " " or self.accept.decode() not in head:
            self.refusal = head
            self.opened.set_exception(ConnectionError(f"upgrade refused: {status}"))
            assert self.transport is not None
            self.transport.close()
            return False
        self.upgraded = True
        return True

    def _frames(self) -> None:
        # Walk the buffer by offset and trim it once: a backlog of hundreds of frames read in
        # one go must cost linear time, not a memmove per frame.
        buffer, start, end = self.buffer, 0, len(self.buffer)
        while end - start >= 2:
            first, second = buffer[start], buffer[start + 1]
            size, header = second & 0x7F, 2
            if size == 126:
                if end - start < 4:
                    break
                size, header = struct.unpack_from("!H", buffer, start + 2)[0], 4
            elif size == 127:
                if end - start < 10:
                    break
                size, header = struct.unpack_from("!Q", buffer, start + 2)[0], 10
            if end - start < header + size:
                break
            payload = bytes(buffer[start + header : start + header + size])
            start += header + size
            self._frame(first & 0x0F, bool(first & 0x80), payload)
        del buffer[:start]

    def _frame(self, opcode: int, final: bool, payload: bytes) -> None:
        if opcode == _OP_PING:
            assert self.transport is not None
            self.transport.write(client_frame(payload, _OP_PONG, self.key))
            return
        if opcode == _OP_CLOSE:
            assert self.transport is not None
            self.transport.close()
            return
        if opcode == _OP_PONG:
            return
        if opcode != _CONTINUATION or self.message:
            self.message += payload
        if final:
            message, self.message = bytes(self.message), bytearray()
            self._message(message)

    def _message(self, message: bytes) -> None:
        if not self.opened.done():
            self.opened.set_result(None)  # the first server event is session.created
            return
        if self.marker in message[:40]:
            key = event_id(message)
            if key is not None:
                self.stamps.u2c_recv[key] = time.perf_counter()
        elif message.startswith(_RESPONSE_DONE):  # one per answer: parsing it costs nothing
            status = orjson.loads(message)["response"].get("status")
            self.stamps.response_statuses[str(status)] += 1


async def open_app(
    url: str, stamps: Stamps, headers: dict[str, str], delta_marker: bytes, app: VoiceApp | None = None
) -> VoiceApp:
    """Connect, upgrade, and wait for ``session.created``; a refused upgrade raises
    ConnectionError and leaves its response head in ``app.refusal``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    app = app or VoiceApp(stamps, delta_marker)
    nonce = base64.b64encode(os.urandom(16))
    app.accept = base64.b64encode(hashlib.sha1(nonce + _GUID).digest())
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {nonce.decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    app.handshake = ("\r\n".join(lines) + "\r\n\r\n").encode()
    await loop.create_connection(lambda: app, host, port)
    await asyncio.wait_for(asyncio.shield(app.opened), 60)
    return app


@dataclass
class Schedule:
    """What each app sends and when: an append every ``append_s``, a turn every ``turn_every_s``."""

    append_s: float
    turn_every_s: float
    duration: float
    turns: bool = True


class Driver:
    """Sends every app's appends on time from one heap (one timer, not one per app); apps may
    join while it runs. ``append(index, seq)`` builds an app's frame and its event id."""

    def __init__(
        self,
        schedule: Schedule,
        append: Callable[[int, int], tuple[str, bytes]],
        stamps: Stamps,
        turn_frames: tuple[bytes, ...],
    ) -> None:
        self.schedule, self.append, self.stamps, self.turn_frames = schedule, append, stamps, turn_frames
        self.apps: list[VoiceApp] = []
        self._starts: list[float] = []
        self._seqs: list[int] = []
        self._next_turn: list[float] = []
        self._heap: list[tuple[float, int]] = []  # (when due, app)

    def add(self, app: VoiceApp, start: float, first_turn: float) -> None:
        """``app`` appends from ``start`` for the schedule's duration, its turns from ``first_turn``."""
        app.stamps = self.stamps  # it may have been made before a measurement began
        heapq.heappush(self._heap, (start, len(self.apps)))
        self.apps.append(app)
        self._starts.append(start)
        self._seqs.append(0)
        self._next_turn.append(first_turn)

    def measure_into(self, stamps: Stamps) -> None:
        """Stamp every frame from now on into ``stamps``."""
        self.stamps = stamps
        for app in self.apps:
            app.stamps = stamps

    async def run(self, until: float = math.inf) -> None:
        """Until ``until`` (loop time), or until every app has sent its duration."""
        loop = asyncio.get_running_loop()
        heap, schedule = self._heap, self.schedule
        while loop.time() < until:
            if not heap:
                if math.isinf(until):
                    return
                await asyncio.sleep(0.01)  # no app yet
                continue
            # Event-loop timers tick in whole milliseconds (libuv): send whatever falls due within
            # the next one, else a sub-millisecond sleep returns at once and the scheduler spins.
            now = loop.time() + 0.001
            while heap and heap[0][0] <= now:
                when, index = heapq.heappop(heap)
                start = self._starts[index]
                if when - start >= schedule.duration:
                    continue
                self._seqs[index] += 1
                key, frame = self.append(index, self._seqs[index])
                self.stamps.c2u_sent[key] = time.perf_counter()
                app = self.apps[index]
                app.send(frame)
                if schedule.turns and when >= self._next_turn[index]:
                    for extra in self.turn_frames:
                        app.send(extra)
                    self._next_turn[index] += schedule.turn_every_s
                heapq.heappush(heap, (start + self._seqs[index] * schedule.append_s, index))
            if heap:
                await asyncio.sleep(max(0.001, heap[0][0] - loop.time()))


async def drive(
    apps: list[VoiceApp],
    starts: list[float],
    schedule: Schedule,
    append: Callable[[int, int], tuple[str, bytes]],
    stamps: Stamps,
    turn_frames: tuple[bytes, ...],
) -> None:
    """Every app from its start for the schedule's duration."""
    driver = Driver(schedule, append, stamps, turn_frames)
    # Users do not take turns in step: first turns spread evenly over one period, so answers
    # start at a steady rate instead of in bursts that would measure the burst, not the path.
    count = len(apps)
    for index, (app, start) in enumerate(zip(apps, starts, strict=True)):
        driver.add(app, start, start + schedule.turn_every_s * (0.5 + index / count))
    await driver.run()
