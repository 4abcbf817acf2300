"""WebSocket framing and handshakes (RFC 6455), sans I/O: bytes in, messages and bytes out.

The relay forwards every frame of every voice session, so this is its hottest code. General
WebSocket stacks spend most of a small frame's cost on machinery the relay does not need: a task
wake-up and a future per message, a queue, per-frame locks, a generator-based parser (measured:
websockets' sans-I/O parser 10 us to read a 1.3 KB frame and 5.6 us to write one; this reader
under 2 us each way). So this module does only what a relay needs, strictly: no extensions
(permessage-deflate is never negotiated: compressing base64 audio costs CPU and saves little),
text payloads are passed on as bytes without decoding (only checked to be UTF-8, cheaply: nearly
all of them are ASCII JSON), control frames are checked as the RFC demands, and masking is done
in C (``websockets.speedups``). The reader and ``encode_frame`` also have compiled twins
(``relay.core._speedups``; ``relay.core.speedups`` says which runs). Conformance is checked with
the Autobahn|Testsuite, on both builds (docs/conformance.md).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import random
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.core import speedups

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets always ships its C speedups on CPython wheels
    from websockets.utils import apply_mask

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA_OPCODES = (OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

# Close codes (RFC 6455 section 7.4, and the IANA registry for 1012-1014).
NORMAL_CLOSURE, GOING_AWAY, PROTOCOL_ERROR = 1000, 1001, 1002
NO_STATUS, ABNORMAL_CLOSURE, INVALID_DATA = 1005, 1006, 1007
POLICY_VIOLATION, MESSAGE_TOO_BIG, INTERNAL_ERROR = 1008, 1009, 1011
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEADER2 = struct.Struct("!BB")
_HEADER4 = struct.Struct("!BBH")
_HEADER10 = struct.Struct("!BBQ")
_mask_bits = random.Random().getrandbits  # see py_encode_frame

MAX_REASON_BYTES = 123  # a control frame's 125 bytes, less the close code
# Fragments: browsers and the SDKs send each event as one frame, but the RFC lets a peer cut a
# message into any number of pieces, empty ones included, which cost a call each and add nothing
# to the size. So each fragment is charged FRAGMENT_COST bytes towards ``max_size`` (at the
# relay's 24 MiB, at most 49,152 fragments per message), and a message may have at most
# MAX_FRAGMENTS, for larger ``max_size``s (Autobahn 9.3.1 / 9.4.1 send 4 MiB in 64-byte
# fragments and an empty final one, 65,537 frames, to a reader of 64 MiB).
FRAGMENT_COST = 512
MAX_FRAGMENTS = 131_072
LARGE_FRAME = 65_536  # payloads from this size are written apart from their header: no joined copy
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

Message = tuple[int, bytes]  # (opcode, payload): whole data messages and single control frames


class ProtocolError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to answer with (1002, 1007, 1009).

    ``messages`` are those the same read completed before the bad frame: the peer sent them
    validly, so they are delivered before the connection fails (Autobahn 3.2, 5.15).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.messages: list[Message] = []


# ---------------------------------------------------------------------------------- frames
def py_encode_frame(payload: bytes, opcode: int = OP_TEXT, *, mask: bool = False) -> bytes:
    """One final frame. Clients must mask (section 5.3); servers must not.

    The mask key protects browsers' intermediaries from cache poisoning by script-chosen bytes;
    the relay's payloads are not chosen by a script on the upstream's path, so a seeded PRNG
    (as aiohttp uses) is enough and costs no system call per frame.
    """
    size = len(payload)
    mask_bit = 0x80 if mask else 0
    if size < 126:
        header = _HEADER2.pack(0x80 | opcode, mask_bit | size)
    elif size < 65536:
        header = _HEADER4.pack(0x80 | opcode, mask_bit | 126, size)
    else:
        header = _HEADER10.pack(0x80 | opcode, mask_bit | 127, size)
    if not mask:
        return header + payload
    key = _mask_bits(32).to_bytes(4, "little")
    return header + key + apply_mask(payload, key)


def encode_frame_parts(payload: bytes, opcode: int = OP_TEXT, *, mask: bool = False) -> tuple[bytes, bytes]:
    """One final frame as (header, body), to be written one after the other: for a large payload
    this saves the copy ``header + payload`` would make (20 MiB for a large conversation item).
    The header is built as in :func:`py_encode_frame`, which keeps it inline: it runs per frame."""
    size = len(payload)
    mask_bit = 0x80 if mask else 0
    if size < 126:
        header = _HEADER2.pack(0x80 | opcode, mask_bit | size)
    elif size < 65536:
        header = _HEADER4.pack(0x80 | opcode, mask_bit | 126, size)
    else:
        header = _HEADER10.pack(0x80 | opcode, mask_bit | 127, size)
    if not mask:
        return header, payload
    key = _mask_bits(32).to_bytes(4, "little")
    return header + key, apply_mask(payload, key)


def close_reason(reason: str | bytes, limit: int = MAX_REASON_BYTES) -> bytes:
    """``reason`` as UTF-8 cut to ``limit`` bytes on a character boundary.

    A close reason must be valid UTF-8 (section 5.5.1): a cut through a multi-byte character
    would make the peer fail the connection (1007) instead of reading the close.
    """
    data = reason.encode() if isinstance(reason, str) else reason
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode()  # drops the split character's head


def close_payload(code: int, reason: bytes = b"") -> bytes:
    """A close frame's body; reasons are cut to fit the 125-byte control-frame limit."""
    if code == NO_STATUS:
        return b""
    return struct.pack("!H", code) + close_reason(reason)


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a received close frame; an empty body means 1005."""
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError(PROTOCOL_ERROR, "close frame with a one-byte body")
    code = int.from_bytes(payload[:2], "big")
    if not (code in _SENDABLE_CODES or 3000 <= code < 5000):
        raise ProtocolError(PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolError(INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


class PyFrameReader:
    """Turns a byte stream into messages: fragments joined, control frames passed one by one.

    ``masked`` is what the peer must do: a server reads masked frames from clients, a client
    reads unmasked frames from servers (section 5.1). ``max_size`` bounds a whole message, with
    each fragment charged ``fragment_cost`` bytes more; ``max_fragments`` bounds their number.
    """

    def __init__(
        self,
        *,
        masked: bool,
        max_size: int,
        max_fragments: int = MAX_FRAGMENTS,
        fragment_cost: int = FRAGMENT_COST,
    ) -> None:
        self._mask_bit = 0x80 if masked else 0
        self.max_size = max_size
        self.max_fragments = max_fragments
        self.fragment_cost = fragment_cost
        self._pending = bytearray()  # an incomplete frame, kept until ``_need`` bytes are here
        self._need = 0  # counted from that frame's first byte, where ``_pending`` begins
        # A fragmented message is joined as it comes: one buffer, whatever the number of pieces.
        self._fragments = bytearray()
        self._fragment_opcode = 0
        self._fragment_size = 0  # the payload so far plus ``fragment_cost`` per fragment
        self._fragment_count = 0
        # A fragmented text message is checked fragment by fragment, so an invalid sequence
        # fails at once (Autobahn 6.4.x); made at its first non-ASCII fragment.
        self._utf8: codecs.IncrementalDecoder | None = None

    def feed(self, data: bytes) -> list[Message]:
        """Every message completed by ``data``, in order; raises ProtocolError on a bad frame
        (with the messages completed before it). The reader is unusable after that.

        One loop, no helper calls for the common frame (a final, unfragmented data frame): this
        runs for every frame the relay forwards.
        """
        view: memoryview | None = None
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return []  # a large frame arriving in pieces: linear, not re-parsed each time
            # Read the frames where they were gathered: a payload is unmasked (or copied) straight
            # out of this buffer, so a 20 MiB frame costs this buffer and its payload, no more.
            data, self._pending = self._pending, bytearray()  # type: ignore[assignment]
            view = memoryview(data)
        messages: list[Message] = []
        masked = self._mask_bit
        pos, end = 0, len(data)
        try:  # free in CPython 3.11+ until something is raised
            while True:
                if end - pos < 2:
                    self._need = 2
                    break
                first, second = data[pos], data[pos + 1]
                size, start = second & 0x7F, pos + 2
                if size == 126:
                    if end - start < 2:
                        self._need = 4
                        break
                    size, start = (data[start] << 8) | data[start + 1], start + 2
                elif size == 127:
                    if end - start < 8:
                        self._need = 10
                        break
                    size, start = int.from_bytes(data[start : start + 8], "big"), start + 8
                if second & 0x80 != masked:
                    raise ProtocolError(PROTOCOL_ERROR, "frame masking is wrong for this side")
                if size > self.max_size:
                    raise ProtocolError(MESSAGE_TOO_BIG, f"frame of {size} bytes exceeds {self.max_size}")
                key_end = start + 4 if masked else start
                stop = key_end + size
                if stop > end:
                    self._need = stop - pos
                    break
                if view is None:  # the common case: a whole frame in one read
                    payload = data[key_end:stop]  # a copy: cheaper to unmask than a memoryview
                    if masked:
                        payload = apply_mask(payload, data[start:key_end])
                elif masked:
                    payload = apply_mask(view[key_end:stop], data[start:key_end])
                else:
                    payload = bytes(view[key_end:stop])
                pos = stop
                if first == 0x81 and not self._fragment_opcode:  # final text, no RSV bits
                    if not payload.isascii():  # a C scan; decoding only for the rare non-ASCII text
                        try:
                            payload.decode()
                        except UnicodeDecodeError:
                            raise ProtocolError(INVALID_DATA, "text message is not UTF-8") from None
                    messages.append((OP_TEXT, payload))
                elif first == 0x82 and not self._fragment_opcode:  # final binary, no RSV bits
                    messages.append((OP_BINARY, payload))
                else:
                    message = self._message(first, payload)
                    if message is not None:
                        messages.append(message)
        except ProtocolError as exc:
            exc.messages = messages
            raise
        if view is not None:
            view.release()
            if pos < end:  # keep only the rest (at most one read), not the large buffer it came in
                self._pending = data[pos:] if pos else data  # type: ignore[assignment]
        elif pos < end:
            self._pending += data[pos:] if pos else data
        return messages

    def _message(self, first: int, payload: bytes) -> Message | None:
        if first & 0x70:
            raise ProtocolError(PROTOCOL_ERROR, "reserved bits set without an extension")
        opcode, final = first & 0x0F, first >= 0x80
        if opcode in _CONTROL_OPCODES:
            if not final or len(payload) > 125:
                raise ProtocolError(PROTOCOL_ERROR, "control frames must be final and short")
            return opcode, payload
        if opcode in _DATA_OPCODES:
            if self._fragment_opcode:
                raise ProtocolError(PROTOCOL_ERROR, "a new message began inside a fragmented one")
            if opcode == OP_TEXT:
                self._check_text(payload, final)
            if final:  # only reached for frames ``feed`` leaves here; kept for completeness
                return opcode, payload
            self._fragment_opcode, self._fragment_count = opcode, 1
            self._fragment_size = len(payload) + self.fragment_cost
            self._fragments += payload
            return None
        if opcode != OP_CONTINUATION:
            raise ProtocolError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if not self._fragment_opcode:
            raise ProtocolError(PROTOCOL_ERROR, "continuation frame outside a fragmented message")
        self._fragment_count += 1
        if self._fragment_count > self.max_fragments:
            raise ProtocolError(POLICY_VIOLATION, f"message in more than {self.max_fragments} fragments")
        self._fragment_size += len(payload) + self.fragment_cost
        if self._fragment_size > self.max_size:
            raise ProtocolError(
                MESSAGE_TOO_BIG,
                f"message exceeds {self.max_size} bytes ({self.fragment_cost} counted per fragment)",
            )
        if self._fragment_opcode == OP_TEXT:
            self._check_text(payload, final)
        self._fragments += payload
        if not final:
            return None
        message = (self._fragment_opcode, bytes(self._fragments))
        self._fragment_opcode, self._fragment_size, self._fragment_count = 0, 0, 0
        self._fragments = bytearray()
        return message

    def _check_text(self, fragment: bytes, final: bool) -> None:
        """Raise 1007 as soon as a text message's bytes cannot be UTF-8; a character split
        between fragments waits for the next one, and must be complete at the final one."""
        decoder = self._utf8
        if decoder is None:
            if fragment.isascii():
                return  # nothing pending from earlier fragments: they were ASCII too
            decoder = self._utf8 = _Utf8Decoder()
        try:
            decoder.decode(fragment, final)
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_DATA, "text message is not UTF-8") from None
        if final:
            self._utf8 = None


# ---------------------------------------------------------------------------------- handshakes
class HandshakeError(Exception):
    """An upgrade that cannot become a WebSocket; ``status`` is the HTTP status seen or sent."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def check_client_request(headers: Mapping[str, str]) -> str:
    """Check an upgrade request (section 4.2.1); returns its key or raises HandshakeError."""
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        raise HandshakeError("expected 'Upgrade: websocket'")
    if "upgrade" not in _tokens(headers.get("Connection", "")):
        raise HandshakeError("expected 'Connection: Upgrade'")
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise HandshakeError("unsupported Sec-WebSocket-Version; this server speaks 13", status=426)
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise HandshakeError("Sec-WebSocket-Key must be 16 bytes in base64")
    return key


def select_subprotocol(offered: Iterable[str], supported: Iterable[str]) -> str | None:
    """The first supported subprotocol the client offered; None is allowed (section 4.2.2)."""
    known = set(supported)
    return next((p for p in offered if p in known), None)


def client_request(host: str, target: str, key: str, headers: Mapping[str, str]) -> bytes:
    """The client's upgrade request for ``target`` (path and query) on ``host``."""
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    rest: bytes  # what followed the head: the first frames, if the server was quick


def parse_response(data: bytes, *, limit: int = 65536) -> HandshakeResponse | None:
    """The server's answer once its head is complete (None: not yet); raises HandshakeError."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > limit:
            raise HandshakeError("the handshake response head is too large", status=0)
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HandshakeError("the upstream did not answer with HTTP", status=0)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HandshakeResponse(int(parts[1]), headers, data[end + 4 :])


def check_server_response(response: HandshakeResponse, key: str) -> None:
    """Accept only a proper 101 for our key (section 4.1); raises HandshakeError otherwise."""
    if response.status != 101:
        raise HandshakeError(f"the upgrade was refused with HTTP {response.status}", response.status)
    headers = response.headers
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in _tokens(
        headers.get("connection", "")
    ):
        raise HandshakeError("the 101 response did not upgrade to websocket", 101)
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("the 101 response carries the wrong Sec-WebSocket-Accept", 101)
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("the server enabled an extension that was not offered", 101)


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",")]


# ---------------------------------------------------------------------------------- the build
if TYPE_CHECKING:  # both builds have these signatures; the pure-Python ones are the reference
    FrameReader = PyFrameReader
    encode_frame = py_encode_frame
else:
    _compiled = speedups.compiled()
    FrameReader = PyFrameReader if _compiled is None else _compiled.FrameReader
    encode_frame = py_encode_frame if _compiled is None else _compiled.encode_frame
