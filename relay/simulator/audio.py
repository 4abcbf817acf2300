"""Audio for the simulator: the assistant's synthetic voice and the G.711 codecs.

The assistant's "speech" is a deterministic voiced signal (a pitched tone with syllable-rate
amplitude modulation), long enough for its text, so clients play real audio of a realistic
duration in the session's output format.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np

Encoding = Literal["pcm16", "pcmu", "pcma"]
PCM_RATE = 24_000
G711_RATE = 8_000


def bytes_per_ms(encoding: str) -> int:
    return 48 if encoding == "pcm16" else 8


def rate_of(encoding: str) -> int:
    return PCM_RATE if encoding == "pcm16" else G711_RATE


def synthesize(text: str, encoding: Encoding, speed_ms_per_char: int = 60) -> bytes:
    """Speech-like audio for ``text``: 60 ms per character, 150-220 Hz voice, 4 Hz syllables."""
    rate = rate_of(encoding)
    duration_s = max(0.2, len(text) * speed_ms_per_char / 1000)
    t = np.arange(int(duration_s * rate)) / rate
    pitch = 180 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    samples = np.clip(voice * envelope * 6000, -32768, 32767).astype("<i2")
    pcm = samples.tobytes()
    if encoding == "pcmu":
        return pcm16_to_ulaw(pcm)
    if encoding == "pcma":
        return pcm16_to_alaw(pcm)
    return pcm


def chunks(audio: bytes, encoding: str, chunk_ms: int) -> Iterator[bytes]:
    size = bytes_per_ms(encoding) * chunk_ms
    for start in range(0, len(audio), size):
        yield audio[start : start + size]


def to_pcm16(audio: bytes, encoding: str) -> np.ndarray:
    """Linear samples (int16 values as float64) for analysis, whatever the encoding."""
    if encoding == "pcmu":
        return np.frombuffer(ulaw_to_pcm16(audio), "<i2").astype(np.float64)
    if encoding == "pcma":
        return np.frombuffer(alaw_to_pcm16(audio), "<i2").astype(np.float64)
    usable = len(audio) - len(audio) % 2
    return np.frombuffer(audio[:usable], "<i2").astype(np.float64)


# --- G.711 (ITU-T G.711, the standard segment tables) ---------------------------------------
_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def _ulaw_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_ULAW_TABLE = _ulaw_decode_table()
_ALAW_TABLE = _alaw_decode_table()


def ulaw_to_pcm16(data: bytes) -> bytes:
    return _ULAW_TABLE[np.frombuffer(data, np.uint8)].astype("<i2").tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    return _ALAW_TABLE[np.frombuffer(data, np.uint8)].astype("<i2").tobytes()


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    samples = np.frombuffer(pcm, "<i2").astype(np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), _ULAW_CLIP) + _ULAW_BIAS
    exponent = np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded: bytes = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()
    return encoded


def pcm16_to_alaw(pcm: bytes) -> bytes:
    value = np.frombuffer(pcm, "<i2").astype(np.int32) >> 3  # A-law works on 13 bits
    mask = np.where(value >= 0, 0xD5, 0x55)
    value = np.where(value >= 0, value, -value - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, value, side="left")
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((value >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8).tobytes()


_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
