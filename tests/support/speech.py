"""Real speech for tests: espeak-ng renders text, resampled to 24 kHz PCM16 (cached per text)."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from tests.support.system import require_binary

_CACHE = Path(tempfile.gettempdir()) / "relay-test-speech"


def speech_pcm16(text: str, rate: int = 24000) -> bytes:
    """``text`` spoken by espeak-ng as mono 16-bit PCM at ``rate`` (skips if espeak-ng is missing)."""
    binary = require_binary("espeak-ng", package="espeak-ng")
    _CACHE.mkdir(exist_ok=True)
    key = hashlib.sha256(f"{text}|{rate}".encode()).hexdigest()[:16]
    cached = _CACHE / f"{key}.pcm"
    if cached.exists():
        return cached.read_bytes()
    wav = _CACHE / f"{key}.wav"
    subprocess.run([binary, "-w", str(wav), text], check=True, capture_output=True, timeout=60)
    with wave.open(str(wav)) as source:
        source_rate = source.getframerate()
        samples = np.frombuffer(source.readframes(source.getnframes()), "<i2").astype(np.float64)
    positions = np.arange(int(len(samples) * rate / source_rate)) * source_rate / rate
    resampled = np.interp(positions, np.arange(len(samples)), samples).astype("<i2").tobytes()
    cached.write_bytes(resampled)
    return resampled


def write_wav(path: Path, pcm16: bytes, rate: int = 24000) -> None:
    with wave.open(str(path), "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(2)
        target.setframerate(rate)
        target.writeframes(pcm16)
