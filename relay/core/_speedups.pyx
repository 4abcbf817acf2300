# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twins of the per-frame functions: the frame reader, the frame writer, the float32 check.

Each does exactly what its pure-Python original does (``relay.core.websocket.PyFrameReader`` and
``py_encode_frame``, ``relay.core.audio.py_looks_like_float32``): those stay the reference and the
fallback (``RELAY_NO_EXTENSIONS=1``, or a machine where this did not build). The gain is in
what Python cannot do cheaply per frame: the frame header read as C integers, not boxed ones;
unmasking, copying and the ASCII check in one pass over the payload, eight bytes at a time; a
frame written into one buffer with its mask applied as it is copied; no Python call per byte
range. tests/core/test_speedups.py feeds both builds the same input and compares the results,
errors included.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy

import os

cdef enum:
    OP_TEXT = 0x1
    OP_BINARY = 0x2
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007
    MESSAGE_TOO_BIG = 1009

cdef object _ProtocolError = None


cdef object _protocol_error():
    """The pure-Python module's exception, found at first use: that module loads this one."""
    global _ProtocolError
    if _ProtocolError is None:
        from relay.core.websocket import ProtocolError

        _ProtocolError = ProtocolError
    return _ProtocolError


cdef object ProtocolError(int code, str reason):
    return _protocol_error()(code, reason)


cdef inline bint _copy(uint8_t* dst, const uint8_t* src, Py_ssize_t n, const uint8_t* key) noexcept nogil:
    """Copy ``n`` bytes, unmasked with ``key`` (NULL: as they are); True if all are ASCII.

    Both halves of the 64-bit mask are the 4-byte key, so the word is right whatever the byte
    order, and every 8-byte step starts at a multiple of 4 from the payload's start.
    """
    cdef uint64_t seen = 0, word, mask64 = 0
    cdef uint32_t mask32
    cdef Py_ssize_t i = 0
    if key != NULL:
        memcpy(&mask32, key, 4)
        mask64 = (<uint64_t>mask32) | ((<uint64_t>mask32) << 32)
    while i + 8 <= n:
        memcpy(&word, src + i, 8)
        word ^= mask64
        seen |= word
        memcpy(dst + i, &word, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ key[i & 3] if key != NULL else src[i]
        seen |= dst[i]
        i += 1
    return (seen & 0x8080808080808080ULL) == 0


cdef class FrameReader:
    """``relay.core.websocket.PyFrameReader``, compiled: the same messages and errors.

    Only the common frame (a whole, final text or binary frame) is read here; fragments and
    control frames, rare, go to a pure-Python reader kept inside, whose code is the reference's
    own (one implementation of the RFC's rules for them, not two).
    """

    cdef int _mask_bit
    cdef readonly Py_ssize_t max_size
    cdef bytearray _pending  # None when nothing waits: the common read touches no buffer
    cdef Py_ssize_t _need
    cdef bint _fragmenting  # a fragmented message is open in ``_rare``
    cdef object _rare

    def __init__(self, *, bint masked, Py_ssize_t max_size, **limits):
        """As the reference's; ``limits``: its ``max_fragments`` and ``fragment_cost``."""
        from relay.core.websocket import PyFrameReader  # loaded by now: it loads this module

        self._mask_bit = 0x80 if masked else 0
        self.max_size = max_size
        self._pending = None
        self._need = 0
        self._fragmenting = False
        self._rare = PyFrameReader(masked=masked, max_size=max_size, **limits)

    @property
    def max_fragments(self):
        return self._rare.max_fragments

    @property
    def fragment_cost(self):
        return self._rare.fragment_cost

    def feed(self, data):
        cdef object buf
        cdef const uint8_t* p
        cdef Py_ssize_t pos = 0, end, start, key_end, stop, length
        cdef uint64_t size
        cdef uint8_t first, second
        cdef bint joined = False, ascii
        cdef int masked = self._mask_bit
        cdef list messages = []
        cdef bytes payload
        cdef object message
        if self._pending is not None:
            self._pending += data
            if PyByteArray_GET_SIZE(self._pending) < self._need:
                return messages
            buf, self._pending, joined = self._pending, None, True
            p = <const uint8_t*>PyByteArray_AS_STRING(buf)
            end = PyByteArray_GET_SIZE(buf)
        else:
            buf = data if PyBytes_CheckExact(data) else bytes(data)
            p = <const uint8_t*>PyBytes_AS_STRING(buf)
            end = PyBytes_GET_SIZE(buf)
        try:
            while True:
                if end - pos < 2:
                    self._need = 2
                    break
                first, second = p[pos], p[pos + 1]
                size, start = second & 0x7F, pos + 2
                if size == 126:
                    if end - start < 2:
                        self._need = 4
                        break
                    size, start = (<uint64_t>p[start] << 8) | p[start + 1], start + 2
                elif size == 127:
                    if end - start < 8:
                        self._need = 10
                        break
                    size = 0
                    for length in range(8):
                        size = (size << 8) | p[start + length]
                    start += 8
                if (second & 0x80) != masked:
                    raise ProtocolError(PROTOCOL_ERROR, "frame masking is wrong for this side")
                if self.max_size < 0 or size > <uint64_t>self.max_size:
                    raise ProtocolError(MESSAGE_TOO_BIG, f"frame of {size} bytes exceeds {self.max_size}")
                key_end = start + 4 if masked else start
                length = <Py_ssize_t>size
                stop = key_end + length
                if stop > end:
                    self._need = stop - pos
                    break
                payload = PyBytes_FromStringAndSize(NULL, length)
                ascii = _copy(
                    <uint8_t*>PyBytes_AS_STRING(payload), p + key_end, length, p + start if masked else NULL
                )
                pos = stop
                if first == 0x81 and not self._fragmenting:  # final text, no RSV bits
                    if not ascii:
                        try:
                            payload.decode()
                        except UnicodeDecodeError:
                            raise ProtocolError(INVALID_DATA, "text message is not UTF-8") from None
                    messages.append((OP_TEXT, payload))
                elif first == 0x82 and not self._fragmenting:  # final binary, no RSV bits
                    messages.append((OP_BINARY, payload))
                else:  # fragments, control frames, broken frames: the reference's own code
                    message = self._rare._message(first, payload)
                    self._fragmenting = self._rare._fragment_opcode != 0
                    if message is not None:
                        messages.append(message)
        except Exception as exc:
            if isinstance(exc, _protocol_error()):
                exc.messages = messages
            raise
        if pos < end:  # keep only the rest (at most one read), not the buffer it came in
            if joined:
                self._pending = buf[pos:] if pos else buf
            else:
                self._pending = PyByteArray_FromStringAndSize(<const char*>p + pos, end - pos)
        return messages


# A mask key per client frame from xorshift64*, seeded once from the OS: the reasoning of
# ``py_encode_frame`` (no script chooses the relay's payloads), without a Python call per frame.
cdef uint64_t _state = int.from_bytes(os.urandom(8), "little") | 1


cdef inline uint32_t _mask_key() noexcept nogil:
    global _state
    _state ^= _state >> 12
    _state ^= _state << 25
    _state ^= _state >> 27
    return <uint32_t>((_state * 0x2545F4914F6CDD1DULL) >> 32)


def encode_frame(payload, int opcode=OP_TEXT, *, bint mask=False):
    """``relay.core.websocket.py_encode_frame``, compiled: header, key and payload in one buffer."""
    return c_encode_frame(payload, opcode, mask)


cdef bytes c_encode_frame(object payload, int opcode, bint mask):
    """``encode_frame`` for compiled callers (``relay/io/_frame_path.pyx``): no Python call."""
    cdef const uint8_t* src
    cdef Py_ssize_t size, head
    cdef uint8_t* out
    cdef uint32_t key
    cdef bytes frame
    cdef int i
    if not PyBytes_CheckExact(payload):
        payload = bytes(payload)
    src = <const uint8_t*>PyBytes_AS_STRING(payload)
    size = PyBytes_GET_SIZE(payload)
    head = 2 if size < 126 else 4 if size < 65536 else 10
    frame = PyBytes_FromStringAndSize(NULL, head + (4 if mask else 0) + size)
    out = <uint8_t*>PyBytes_AS_STRING(frame)
    out[0] = 0x80 | (opcode & 0x0F)
    if size < 126:
        out[1] = <uint8_t>size
    elif size < 65536:
        out[1] = 126
        out[2], out[3] = <uint8_t>(size >> 8), <uint8_t>size
    else:
        out[1] = 127
        for i in range(8):
            out[2 + i] = <uint8_t>(<uint64_t>size >> (56 - 8 * i))
    if not mask:
        memcpy(out + head, src, size)
        return frame
    out[1] |= 0x80
    key = _mask_key()
    memcpy(out + head, &key, 4)
    _copy(out + head + 4, src, size, out + head)
    return frame


# The high byte of a little-endian float32 in [-1, 1]: 0x20-0x3F, or 0xA0-0xBF when negative.
cdef uint8_t _EXPONENT[256]
for _b in range(256):
    _EXPONENT[_b] = 1 if 0x20 <= _b < 0x40 or 0xA0 <= _b < 0xC0 else 0


def looks_like_float32(pcm):
    """``relay.core.audio.py_looks_like_float32``, compiled: one pass over the high bytes."""
    return c_looks_like_float32(pcm)


cdef bint c_looks_like_float32(object pcm) except -1:
    cdef const uint8_t* p
    cdef Py_ssize_t n, i, judged = 0, outside = 0, free = 0, others = 0
    cdef uint8_t b
    if not PyBytes_CheckExact(pcm):
        pcm = bytes(pcm)
    p = <const uint8_t*>PyBytes_AS_STRING(pcm)
    n = PyBytes_GET_SIZE(pcm)
    cdef double allowed = (n // 4) * (1 - 0.95)
    # The first 64 candidates alone may settle it (as in the original; the same answer).
    i = 3
    while i < n and i < 256:
        b = p[i]
        if b and not _EXPONENT[b]:
            outside += 1
        i += 4
    if outside > allowed:
        return False
    outside = 0
    i = 3
    while i < n:
        b = p[i]
        if b:
            judged += 1
            if not _EXPONENT[b]:
                outside += 1
        i += 4
    if judged < 32:
        return False
    if outside > judged * (1 - 0.95):
        return False
    i = 1
    while i < n:
        others += 1
        if not _EXPONENT[p[i]]:
            free += 1
        i += 4
    return free > others * 0.3


# The characters an event id may hold without escapes: printable ASCII but '"' and '\\'.
cdef uint8_t _ID_CHAR[256]
for _b in range(256):
    _ID_CHAR[_b] = 1 if 0x20 <= _b < 0x7F and _b not in (0x22, 0x5C) else 0

cdef bytes _TYPE_KEY = b'"type"'
cdef bytes _AUDIO_KEY = b'"audio"'
cdef bytes _ID_KEY = b'"event_id"'
cdef bytes _TYPE_VALUE = b'"input_audio_buffer.append"'
cdef object _b64decode = None
cdef object _b64errors = None
cdef Py_ssize_t _max_id = 0
cdef Py_ssize_t _max_audio = 0


cdef inline bint _at(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, bytes word) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(word)
    return end - pos >= n and memcmp(p + pos, PyBytes_AS_STRING(word), n) == 0


def decode_plain_append(data):
    """``relay.core.audio.py_decode_plain_append``, compiled: the same answers, in one pass over
    the frame on C pointers (the reference takes the commonest form apart, then a regex)."""
    return c_decode_plain_append(data)


cdef inline Py_ssize_t _skip(const uint8_t* p, Py_ssize_t pos, Py_ssize_t n) noexcept:
    """Past JSON whitespace (space, tab, line feed, carriage return) from ``pos``."""
    while pos < n and (p[pos] == 0x20 or p[pos] == 0x09 or p[pos] == 0x0A or p[pos] == 0x0D):
        pos += 1
    return pos


cdef object c_decode_plain_append(object data):
    global _b64decode, _b64errors, _max_id, _max_audio
    cdef const uint8_t* p
    cdef const void* quote
    cdef Py_ssize_t n, pos, end, i, audio_start = 0, audio_end = 0
    cdef bint have_type = False, have_audio = False, have_id = False, closed = False
    cdef int key, member
    if not PyBytes_CheckExact(data):
        return None
    if _b64decode is None:
        import binascii

        import pybase64

        from relay.core.protocol import MAX_APPEND_BYTES, MAX_EVENT_ID_LENGTH

        _b64decode, _b64errors = pybase64.b64decode, (binascii.Error, ValueError)
        _max_id, _max_audio = MAX_EVENT_ID_LENGTH, MAX_APPEND_BYTES
    p = <const uint8_t*>PyBytes_AS_STRING(data)
    n = PyBytes_GET_SIZE(data)
    pos = _skip(p, 0, n)
    if pos >= n or p[pos] != 0x7B:  # '{'
        return None
    pos += 1
    for member in range(3):
        pos = _skip(p, pos, n)
        if not have_type and _at(p, pos, n, _TYPE_KEY):
            have_type = True
            pos += PyBytes_GET_SIZE(_TYPE_KEY)
            key = 0
        elif not have_audio and _at(p, pos, n, _AUDIO_KEY):
            have_audio = True
            pos += PyBytes_GET_SIZE(_AUDIO_KEY)
            key = 1
        elif not have_id and _at(p, pos, n, _ID_KEY):
            have_id = True
            pos += PyBytes_GET_SIZE(_ID_KEY)
            key = 2
        else:
            return None  # another member, or one again
        pos = _skip(p, pos, n)
        if pos >= n or p[pos] != 0x3A:  # ':'
            return None
        pos = _skip(p, pos + 1, n)
        if pos >= n or p[pos] != 0x22:  # not a string
            return None
        quote = memchr(p + pos + 1, 0x22, n - pos - 1)
        if quote == NULL:
            return None
        end = <const uint8_t*>quote - p
        if key == 0:
            if end - pos + 1 != PyBytes_GET_SIZE(_TYPE_VALUE) or not _at(p, pos, n, _TYPE_VALUE):
                return None
        elif key == 1:
            audio_start, audio_end = pos + 1, end
        else:
            if end - pos - 1 > _max_id:
                return None
            for i in range(pos + 1, end):
                if not _ID_CHAR[p[i]]:
                    return None
        pos = _skip(p, end + 1, n)
        if pos < n and p[pos] == 0x7D:  # '}' ends the object, and only whitespace may follow
            if not (have_type and have_audio) or _skip(p, pos + 1, n) != n:
                return None
            closed = True
            break
        if pos >= n or p[pos] != 0x2C:  # ','
            return None
        pos += 1
    if not closed:
        return None  # a fourth member
    try:
        audio = _b64decode(data[audio_start:audio_end], None, True)
    except _b64errors:
        return None
    return audio if PyBytes_GET_SIZE(audio) <= _max_audio else None
