"""Checks on appended audio, and the commit accounting behind F5 and F6.

``InputAudioCheck`` decodes strict base64, enforces the API's 15 MiB limit, and catches the
classic bug of sending 32-bit float samples as PCM16: such data is valid base64 and the API
accepts it, but transcription comes back empty or garbage. Samples split across appends are
legal (the API's buffer is a byte stream) and carried, never refused.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pybase64

from relay.core import speedups
from relay.core.errors import InvalidEvent
from relay.core.protocol import MAX_APPEND_BYTES, MAX_EVENT_ID_LENGTH, MIN_COMMIT_MS

BYTES_PER_MS = {"pcm16": 48, "pcmu": 8, "pcma": 8}
SAMPLE_BYTES = {"pcm16": 2, "pcmu": 1, "pcma": 1}
# The high byte of a little-endian float32 in [-1, 1] holds the sign and the top of the exponent:
# 0x20-0x3F (or 0xA0-0xBF when negative) for every magnitude from 2^-63 up to 1.
_FLOAT_EXPONENT_BYTES = bytes(range(0x20, 0x40)) + bytes(range(0xA0, 0xC0))
_FLOAT_EXPONENT_OR_ZERO = _FLOAT_EXPONENT_BYTES + b"\x00"
_MIN_FLOAT_SAMPLES = 32
_FLOAT_SHARE = 0.95

FLOAT32_MESSAGE = (
    "Invalid 'audio': the data looks like 32-bit float samples, but the session's input format "
    "is 16-bit PCM (audio/pcm). Hint: convert each sample with "
    "int16 = round(clamp(x, -1, 1) * 32767) before base64-encoding, or send 16-bit PCM directly."
)


def encoding_of(session: Mapping[str, Any]) -> str:
    """The input encoding named by a GA (or beta) session object."""
    audio = session.get("audio")
    if isinstance(audio, Mapping) and isinstance(audio.get("input"), Mapping):
        fmt = audio["input"].get("format")
        kind = fmt.get("type") if isinstance(fmt, Mapping) else None
        return {"audio/pcmu": "pcmu", "audio/pcma": "pcma"}.get(str(kind), "pcm16")
    beta = session.get("input_audio_format")
    return {"g711_ulaw": "pcmu", "g711_alaw": "pcma"}.get(str(beta), "pcm16")


def py_looks_like_float32(pcm: bytes) -> bool:
    """True when ``pcm`` is float32 audio: nearly every 4th byte is a float exponent byte.

    Real PCM16 puts sample high bytes there, which wander across the whole range for speech,
    tones and noise, and sit at 0x00/0xFF for quiet audio. All-zero buffers are the same bytes
    in both formats and are never flagged.
    """
    # Most PCM16 shows itself in its first samples: when the first 64 candidate bytes alone hold
    # more misfits than the whole buffer may, the full count below could only say the same.
    allowed = len(pcm) // 4 * (1 - _FLOAT_SHARE)
    if len(pcm[3:256:4].translate(None, _FLOAT_EXPONENT_OR_ZERO)) > allowed:
        return False
    # Exact zeros are the same bytes in both formats: judge only the samples that are not.
    high = pcm[3::4]
    judged = len(high) - high.count(0)
    if judged < _MIN_FLOAT_SAMPLES:
        return False
    outside = len(high.translate(None, _FLOAT_EXPONENT_OR_ZERO))  # neither zero nor in the band
    if outside > judged * (1 - _FLOAT_SHARE):
        return False
    # PCM16 of a loud, steady signal could sit in that band too; float32 also has the low
    # mantissa bytes free, while such PCM16 would repeat the band in the other samples' high bytes.
    others = pcm[1::4]
    return len(others.translate(None, _FLOAT_EXPONENT_BYTES)) > len(others) * 0.3


if TYPE_CHECKING:  # the compiled twin (relay.core._speedups) has the same signature
    looks_like_float32 = py_looks_like_float32
else:
    _compiled = speedups.compiled()
    looks_like_float32 = py_looks_like_float32 if _compiled is None else _compiled.looks_like_float32


def decode_append(audio_b64: str, client_event_id: str | None) -> bytes:
    """The bytes of one ``input_audio_buffer.append``, strictly decoded and within the limit."""
    try:
        # SIMD base64 (pybase64): ~5x faster than binascii on a 20 ms append, and as strict:
        # it also refuses padding after a complete quantum, which binascii's strict mode allows.
        audio = pybase64.b64decode(audio_b64, None, True)  # validate=True (positional: cheaper)
    except (binascii.Error, ValueError):
        raise InvalidEvent(
            "invalid_value",
            "Invalid 'audio'. Expected base64-encoded audio bytes (mono PCM16 at 24kHz) but got "
            "an invalid value.",
            "audio",
            client_event_id,
        ) from None
    if len(audio) > MAX_APPEND_BYTES:
        raise InvalidEvent(
            "invalid_value",
            f"Invalid 'audio': {len(audio)} bytes is over the limit of {MAX_APPEND_BYTES} bytes per append.",
            "audio",
            client_event_id,
        )
    return audio


# The plain append as apps write it: the object of a type, the audio and maybe an event id
# (printable ASCII, no escapes), its members in any order, with JSON's whitespace or none between
# tokens. JSON.stringify and orjson write it compact with the type first; Python's json.dumps (the
# openai SDK) with a space after each ',' and ':'; pydantic (the Agents SDK) compact with the audio
# first. Such a frame is the object the schema accepts and holds no key twice, so its audio is all
# there is to check.
_SPACE = rb"[ \t\n\r]*"  # JSON's whitespace, and only JSON's
_MEMBER = _SPACE + rb'"(type|audio|event_id)"' + _SPACE + rb":" + _SPACE + rb'"([^"]*)"' + _SPACE
_PLAIN_APPEND = re.compile(
    _SPACE + rb"\{" + _MEMBER + rb"(?:," + _MEMBER + rb")?(?:," + _MEMBER + rb")?\}" + _SPACE
)
_PLAIN_ID = re.compile(rb"[ !#-\[\]-~]{0,%d}" % MAX_EVENT_ID_LENGTH)
# The compact form with the type first, read without the regex (which would scan the audio one
# character at a time: 1.5 us of a 20 ms append's).
_APPEND_HEAD = b'{"type":"input_audio_buffer.append",'
_AUDIO_KEY = b'"audio":"'
_ID_KEY = b'"event_id":"'


def py_decode_plain_append(data: bytes) -> bytes | None:
    """The audio of a plain append (above), decoded as :func:`decode_append` would; None when
    ``data`` is any other frame or its audio would be refused: the full check then decides, and
    says why. Not a parser: a shortcut for the commonest frame, whose answer the full check
    would give too. (A string's characters are left to what reads it: the strict decoder refuses
    any outside the base64 alphabet, an escape among them; the type and the id must be exact.)
    The reference of the compiled build's shortcut, which takes every form in one pass."""
    audio_b64 = _compact_audio(data) if data.startswith(_APPEND_HEAD) else None
    return _decoded(audio_b64 if audio_b64 is not None else _any_form_audio(data))


def py_decode_compact_append(data: bytes) -> bytes | None:
    """The pure-Python build's shortcut: :func:`py_decode_plain_append` for the compact form with
    the type first only. Its regex for the other forms costs more in the interpreter than the
    full check it would spare (7.6 against 6.5 us per append), so they take the full check."""
    return _decoded(_compact_audio(data)) if data.startswith(_APPEND_HEAD) else None


def _decoded(audio_b64: bytes | None) -> bytes | None:
    if audio_b64 is None:
        return None
    try:
        audio = pybase64.b64decode(audio_b64, None, True)
    except (binascii.Error, ValueError):
        return None
    return audio if len(audio) <= MAX_APPEND_BYTES else None


def _compact_audio(data: bytes) -> bytes | None:
    """The audio's text of a compact append with the type first (None: another form)."""
    pos, audio_at, have_id = len(_APPEND_HEAD), (0, -1), False
    for member in (1, 2):
        if audio_at[1] < 0 and data.startswith(_AUDIO_KEY, pos):
            start = pos + len(_AUDIO_KEY)
            pos = data.find(b'"', start)
            audio_at = (start, pos)
        elif not have_id and data.startswith(_ID_KEY, pos):
            start = pos + len(_ID_KEY)
            pos = data.find(b'"', start)
            if pos < 0 or _PLAIN_ID.fullmatch(data, start, pos) is None:
                return None
            have_id = True
        else:
            return None
        if pos < 0:
            return None
        pos += 1
        if pos == len(data) - 1 and data[pos] == 0x7D and audio_at[1] >= 0:  # '}' ends it
            return data[audio_at[0] : audio_at[1]]
        if member == 2 or not data.startswith(b",", pos):
            return None
        pos += 1
    return None


def _any_form_audio(data: bytes) -> bytes | None:
    """The audio's text of a plain append in any of its forms (None: not one)."""
    match = _PLAIN_APPEND.fullmatch(data)
    if match is None:
        return None
    members = match.groups()
    keys = [key for key in members[0::2] if key is not None]
    if len(set(keys)) != len(keys):
        return None  # a key twice
    values = dict(zip(members[0::2], members[1::2], strict=True))
    if values.get(b"type") != b"input_audio_buffer.append":
        return None
    event_id = values.get(b"event_id")
    if event_id is not None and _PLAIN_ID.fullmatch(event_id) is None:
        return None
    return values.get(b"audio")


if TYPE_CHECKING:
    decode_plain_append = py_decode_plain_append
else:
    decode_plain_append = py_decode_compact_append if _compiled is None else _compiled.decode_plain_append


def check_append(audio_b64: str, encoding: str, client_event_id: str | None) -> int:
    """One append checked on its own (no buffer before it); returns the decoded byte count."""
    return len(InputAudioCheck(encoding).check(audio_b64, client_event_id))


# The float32 detector judges at least this much audio at once (64 float samples): smaller
# appends are gathered until there is enough to tell, so cutting a stream fine cannot hide it.
_MIN_JUDGED_BYTES = 256


class InputAudioCheck:
    """The checks on a session's input audio stream, append by append (F6).

    The API's input buffer is a byte stream and apps cut it anywhere (a 1,323-byte PCM16 chunk, a
    33-byte stub): a sample split across two appends is legal, so alignment is a property of the
    buffer, not of one append. The float32 detector therefore reads the stream across appends: up
    to 3 bytes carried from the previous append, small appends gathered until there is enough to
    judge, and, whenever the stream is off its 4-byte grid, every phase tried. Only what is
    certainly broken is refused; a split sample is counted.
    """

    def __init__(self, encoding: str = "pcm16") -> None:
        self.encoding = encoding
        self._carry = b""  # the stream's bytes after its last whole 4-byte group (PCM16 only)
        self.on_split_sample: Callable[[], None] = _nothing  # an append ended mid-sample (legal)

    def set_encoding(self, encoding: str) -> None:
        if encoding != self.encoding:
            self.encoding = encoding
            self.restart()

    def restart(self) -> None:
        """The API's buffer was emptied (commit, clear): alignment starts again."""
        self._carry = b""

    def take_plain(self, data: bytes) -> bytes | None:
        """The audio of a plain append frame that :meth:`check` would accept, with the same
        effect on the stream, in one step and without parsing the frame; None for any other
        frame or audio check would refuse (nothing changed: :meth:`check` then decides)."""
        audio = decode_plain_append(data)
        if audio is None or self.encoding != "pcm16":
            return audio  # G.711: a byte is a sample (as in check)
        if not self._carry and not len(audio) & 3 and len(audio) >= _MIN_JUDGED_BYTES:
            return None if looks_like_float32(audio) else audio  # the common 20 ms append
        return self.take_streamed(audio)

    def take_streamed(self, audio: bytes) -> bytes | None:
        """A PCM16 append off the common path (a carry, a part sample, too little to judge
        alone), taken as :meth:`check` would; None, with nothing changed, if check refuses it."""
        carry, refused = self._stream(audio)
        if refused:
            return None
        self._carry = carry
        if len(audio) & 1:
            self.on_split_sample()
        return audio

    def check(self, audio_b64: str, client_event_id: str | None) -> bytes:
        """Validate one append's payload; returns its bytes. Raises InvalidEvent to refuse it."""
        audio = decode_append(audio_b64, client_event_id)
        if self.encoding != "pcm16":
            return audio  # G.711: a byte is a sample, and float32 cannot pass for it unnoticed
        if not self._carry and not len(audio) & 3 and len(audio) >= _MIN_JUDGED_BYTES:
            if looks_like_float32(audio):  # the common 20 ms append: judged as it is, no copy
                raise InvalidEvent("invalid_audio_format", FLOAT32_MESSAGE, "audio", client_event_id)
            return audio
        # The phase is the client's stream's, refused appends included: the app sends one stream.
        self._carry, refused = self._stream(audio)
        if refused:
            raise InvalidEvent("invalid_audio_format", FLOAT32_MESSAGE, "audio", client_event_id)
        if len(audio) & 1:
            self.on_split_sample()
        return audio

    def _stream(self, audio: bytes) -> tuple[bytes, bool]:
        """The carry after ``audio`` and whether the stream now shows float32 (nothing changed).
        Too little to judge: all of it is carried (under 260 bytes) for the next append's verdict."""
        stream = self._carry + audio
        whole = len(stream) & ~3
        judged = whole >= _MIN_JUDGED_BYTES
        return (stream[whole:] if judged else stream), judged and _float32_at_any_phase(stream)


def _float32_at_any_phase(stream: bytes) -> bool:
    """Float samples need not start on the buffer's 4-byte grid (PCM went before them, or the app
    cut its stream oddly): off the common path, every phase is tried."""
    return any(looks_like_float32(stream[p : p + ((len(stream) - p) & ~3)]) for p in range(4))


class AudioAccount:
    """Audio the client appended since its last commit or clear, so a too-early commit is
    answered locally.

    Counted from the client's own stream only: the server's ``committed`` and ``cleared`` come
    back late (the app may be appending its next utterance by then), so taking them as a reset
    would lose audio the app did send, and refuse its next commit as empty.
    """

    def __init__(self, encoding: str = "pcm16") -> None:
        self.encoding = encoding
        self.bytes = 0

    def set_encoding(self, encoding: str) -> None:
        self.encoding = encoding

    def appended(self, nbytes: int) -> None:
        self.bytes += nbytes

    def committed(self) -> None:
        self.bytes = 0

    def cleared(self) -> None:
        self.bytes = 0

    @property
    def buffered_ms(self) -> float:
        return self.bytes / BYTES_PER_MS.get(self.encoding, 48)

    def check_commit(self, turn_detection_on: bool, client_event_id: str | None) -> None:
        """The API's exact error for a commit under 100 ms, when the relay knows it is one.

        With server VAD on, the server commits on its own and the relay cannot know what is left,
        so only a buffer the client never appended to since its commit or clear is answered locally.
        """
        buffered = self.buffered_ms
        if buffered >= MIN_COMMIT_MS or (turn_detection_on and self.bytes > 0):
            return
        raise InvalidEvent(
            "input_audio_buffer_commit_empty",
            "Error committing input audio buffer: buffer too small. Expected at least 100ms of "
            f"audio, but buffer only has {buffered:.2f}ms of audio.",
            None,
            client_event_id,
        )


def _nothing() -> None:
    return None
