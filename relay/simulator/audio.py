"""Audio for the simulator: the assistant's synthetic voice and the G.711 codecs.

The assistant's "speech" is a deterministic voiced signal shaped like the text it speaks: letters
are voiced (vowels louder than consonants), spaces are short dips and punctuation is a pause, at
``speed_ms_per_char`` per character. Clients therefore receive audio of a realistic duration and
rhythm in the session's output format, and a VAD listening to it sees words and pauses.

The G.711 codecs follow the classic reference implementation (Sun Microsystems' g711.c, which
CPython's ``audioop`` also uses): μ-law on 14-bit and A-law on 13-bit linear samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

Encoding = Literal["pcm16", "pcmu", "pcma"]
PCM_RATE = 24_000
G711_RATE = 8_000
_VOICE_PEAK = 9000  # about -11 dBFS peak, -20 dBFS RMS: a normal speaking level
_VOWELS = frozenset("aeiouyAEIOUY")
_PAUSES = frozenset(".,;:!?")


def bytes_per_ms(encoding: str) -> int:
    """PCM16 at 24 kHz is 48 bytes per ms; G.711 (8 kHz, one byte a sample) is 8."""
    return 48 if encoding == "pcm16" else 8


def rate_of(encoding: str) -> int:
    return PCM_RATE if encoding == "pcm16" else G711_RATE


@lru_cache(maxsize=128)  # deterministic; a busy simulator speaks the same reply many times
def synthesize(text: str, encoding: Encoding, speed_ms_per_char: int = 60) -> bytes:
    """Speech-like audio for ``text``: ``speed_ms_per_char`` per character, at least 200 ms."""
    rate = rate_of(encoding)
    per_char = max(1, speed_ms_per_char * rate // 1000)
    envelope = _envelope(text or " ", per_char, minimum=rate // 5)
    seconds = np.arange(envelope.size) / rate
    samples = np.round(_voice(seconds, rate) * envelope * _VOICE_PEAK).astype("<i2")
    return encode(samples.tobytes(), encoding)


def encode(pcm: bytes, encoding: str) -> bytes:
    """PCM16 (at the encoding's rate) into ``encoding``."""
    if encoding == "pcmu":
        return pcm16_to_ulaw(pcm)
    if encoding == "pcma":
        return pcm16_to_alaw(pcm)
    return pcm


def _envelope(text: str, per_char: int, minimum: int) -> npt.NDArray[np.float64]:
    """Loudness per sample: one step per character, smoothed over ~8 ms so words have no clicks."""
    levels = np.array([_char_level(char) for char in text], dtype=np.float64)
    steps = np.repeat(levels, per_char)
    if steps.size < minimum:
        steps = np.concatenate((steps, np.full(minimum - steps.size, steps[-1])))
    width = max(1, per_char // 8)
    padded = np.concatenate((np.zeros(width), steps, np.zeros(width)))
    summed = np.cumsum(padded)
    smooth = (summed[2 * width :] - summed[: -2 * width]) / (2 * width)
    return np.asarray(smooth[: steps.size])


def _char_level(char: str) -> float:
    if char in _PAUSES:
        return 0.0
    if char.isspace():
        return 0.08
    return 1.0 if char in _VOWELS else 0.55


def _voice(seconds: npt.NDArray[np.float64], rate: int) -> npt.NDArray[np.float64]:
    """A 150-210 Hz voice with a slow pitch contour, three harmonics and 4 Hz syllables."""
    pitch = 180 + 30 * np.sin(2 * np.pi * 0.7 * seconds)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)
    syllables = 0.65 + 0.35 * np.sin(2 * np.pi * 4 * seconds)
    return np.asarray(voice * syllables / 1.6)


def chunks(audio: bytes, encoding: str, chunk_ms: int) -> Iterator[bytes]:
    """``audio`` in pieces of ``chunk_ms`` (the last may be shorter; whole samples always)."""
    size = bytes_per_ms(encoding) * max(1, chunk_ms)
    for start in range(0, len(audio), size):
        yield audio[start : start + size]


def to_pcm16(audio: bytes, encoding: str) -> npt.NDArray[np.float64]:
    """Linear samples (int16 values as float64) for analysis, whatever the encoding."""
    if encoding == "pcmu":
        return _ULAW_TABLE[np.frombuffer(audio, np.uint8)].astype(np.float64)
    if encoding == "pcma":
        return _ALAW_TABLE[np.frombuffer(audio, np.uint8)].astype(np.float64)
    usable = len(audio) - len(audio) % 2
    return np.frombuffer(audio[:usable], "<i2").astype(np.float64)


# --- G.711 ------------------------------------------------------------------------------------
_ULAW_BIAS = 0x84
_ULAW_CLIP_14BIT = 8159
_SEGMENT_ENDS_ULAW = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_SEGMENT_ENDS_ALAW = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    magnitude = ((((codes & 0x0F) << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


_ULAW_TABLE = _ulaw_decode_table()
_ALAW_TABLE = _alaw_decode_table()


def ulaw_to_pcm16(data: bytes) -> bytes:
    return _ULAW_TABLE[np.frombuffer(data, np.uint8)].astype("<i2").tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    return _ALAW_TABLE[np.frombuffer(data, np.uint8)].astype("<i2").tobytes()


def _samples(pcm: bytes) -> npt.NDArray[np.int32]:
    """Whole little-endian 16-bit samples; a trailing odd byte is not a sample and is dropped."""
    return np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], "<i2").astype(np.int32)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    value = _samples(pcm) >> 2  # μ-law works on 14 bits
    mask = np.where(value >= 0, 0xFF, 0x7F)
    magnitude = np.minimum(np.abs(value), _ULAW_CLIP_14BIT) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_ENDS_ULAW, magnitude, side="left")
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)  # full scale: the largest code
    return ((code ^ mask) & 0xFF).astype(np.uint8).tobytes()


def pcm16_to_alaw(pcm: bytes) -> bytes:
    value = _samples(pcm) >> 3  # A-law works on 13 bits
    mask = np.where(value >= 0, 0xD5, 0x55)
    value = np.where(value >= 0, value, -value - 1)
    segment = np.searchsorted(_SEGMENT_ENDS_ALAW, value, side="left")
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((value >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8).tobytes()
