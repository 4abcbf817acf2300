"""Real speech for tests: espeak-ng voices, the truth of where speech is, and background noise.

``speech_pcm16`` renders text with espeak-ng (Debian package ``espeak-ng``; the test is skipped
with the reason when it cannot be installed) and resamples it to the rate asked for. Results are
cached per text and rate in the temp directory, so a test run calls espeak-ng once per phrase.

``speech_segments`` measures where speech really is from a clean waveform, sample by sample, with
no framing or levels shared with the detectors under test. ``room_noise`` and ``with_noise``
make reproducible background noise, alone or at a chosen signal-to-noise ratio.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tests.support.system import require_binary

_CACHE = Path(tempfile.gettempdir()) / "relay-test-speech"
ESPEAK_RATE = 22050


def speech_pcm16(text: str, rate: int = 24000) -> bytes:
    """``text`` spoken by espeak-ng as mono 16-bit PCM at ``rate`` (skips if espeak-ng is missing)."""
    key = hashlib.sha256(f"{text}|{rate}".encode()).hexdigest()[:20]
    cached = _CACHE / f"{key}.pcm"
    if cached.exists():
        return cached.read_bytes()
    pcm = resample(_espeak(text), ESPEAK_RATE, rate)
    _CACHE.mkdir(exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(pcm)
    partial.replace(cached)  # atomic: parallel test workers never read half a file
    return pcm


def _espeak(text: str) -> bytes:
    """espeak-ng's own output: 16-bit mono PCM at its native rate (22050 Hz)."""
    binary = require_binary("espeak-ng", package="espeak-ng")
    done = subprocess.run([binary, "--stdout", text], check=True, capture_output=True, timeout=60)
    with wave.open(io.BytesIO(_fix_wav_lengths(done.stdout))) as source:
        if source.getframerate() != ESPEAK_RATE or source.getsampwidth() != 2:
            raise RuntimeError(f"unexpected espeak-ng output: {source.getparams()}")
        frames: bytes = source.readframes(source.getnframes())
    return frames


def _fix_wav_lengths(data: bytes) -> bytes:
    """Patch the RIFF and data chunk sizes, which a streaming writer cannot know in advance."""
    fixed = bytearray(data)
    fixed[4:8] = (len(data) - 8).to_bytes(4, "little")
    at = fixed.find(b"data", 12)
    if at >= 0:
        fixed[at + 4 : at + 8] = (len(data) - at - 8).to_bytes(4, "little")
    return bytes(fixed)


def speech_track(texts: Sequence[str], rate: int = 24000, *, gap_ms: int = 800, lead_ms: int = 1000) -> bytes:
    """Several utterances as one clip: ``lead_ms`` of silence, then each text and ``gap_ms`` after it."""
    silence = np.zeros(rate * lead_ms // 1000, dtype="<i2")
    gap = np.zeros(rate * gap_ms // 1000, dtype="<i2")
    parts = [silence]
    for text in texts:
        parts += [np.frombuffer(speech_pcm16(text, rate), "<i2"), gap]
    track: bytes = np.concatenate(parts).astype("<i2").tobytes()
    return track


def resample(pcm16: bytes, source_rate: int, rate: int) -> bytes:
    """Band-limited resampling through the spectrum (exact for a finite clip, no aliasing)."""
    samples = np.frombuffer(pcm16, "<i2").astype(np.float64)
    if source_rate == rate or samples.size == 0:
        return pcm16
    count = round(samples.size * rate / source_rate)
    spectrum = np.fft.rfft(samples)
    kept = min(spectrum.size, count // 2 + 1)
    result = np.fft.irfft(spectrum[:kept], count) * (count / samples.size)
    return np.clip(np.round(result), -32768, 32767).astype("<i2").tobytes()


def write_wav(path: Path | str, pcm16: bytes, rate: int = 24000) -> None:
    """Save mono 16-bit PCM as a WAV file (to listen to what a test fed a detector)."""
    with wave.open(str(path), "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(2)
        target.setframerate(rate)
        target.writeframes(pcm16)


def speech_segments(
    pcm16: bytes, rate: int = 24000, *, min_gap_ms: float = 200, floor_db: float = -40
) -> list[tuple[float, float]]:
    """Where speech is in a *clean* recording: (start_ms, end_ms) spans, measured per sample.

    A sample is speech when its magnitude is within ``floor_db`` of the loudest sample; spans of
    such samples closer than ``min_gap_ms`` are one utterance (pauses inside words and phrases).
    """
    samples = np.abs(np.frombuffer(pcm16, "<i2").astype(np.float64))
    if samples.size == 0 or samples.max() == 0:
        return []
    active = np.nonzero(samples >= samples.max() * 10 ** (floor_db / 20))[0]
    breaks = np.nonzero(np.diff(active) > min_gap_ms * rate / 1000)[0]
    starts = np.concatenate(([active[0]], active[breaks + 1]))
    ends = np.concatenate((active[breaks], [active[-1]])) + 1
    return [(float(s) * 1000 / rate, float(e) * 1000 / rate) for s, e in zip(starts, ends, strict=True)]


def with_noise(pcm16: bytes, rate: int, snr_db: float, *, seed: int = 0) -> bytes:
    """``pcm16`` plus room noise (see ``room_noise``) ``snr_db`` below the level of its speech.

    The speech level is the RMS over the speech spans only, as SNR is usually stated.
    """
    clean = np.frombuffer(pcm16, "<i2").astype(np.float64)
    speech_dbfs = 20 * np.log10(_speech_rms(clean, pcm16, rate) / 32768)
    noise = np.frombuffer(room_noise(clean.size, rate, speech_dbfs - snr_db, seed=seed), "<i2")
    noisy: bytes = np.clip(clean + noise, -32768, 32767).astype("<i2").tobytes()
    return noisy


def room_noise(count: int, rate: int, rms_dbfs: float, *, seed: int = 0) -> bytes:
    """``count`` samples of reproducible room-like noise at ``rms_dbfs``.

    The noise is pink (equal energy per octave, like ventilation and traffic) and its level
    drifts by +-3 dB, so a detector cannot simply learn one constant.
    """
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(count))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(count, 1 / rate), 20.0))  # 1/f power
    noise = np.fft.irfft(spectrum, count)
    drift_db = 3 * np.sin(2 * np.pi * 0.3 * np.arange(count) / rate + rng.uniform(0, 2 * np.pi))
    noise *= 10 ** (drift_db / 20)
    noise *= 32768 * 10 ** (rms_dbfs / 20) / np.sqrt(np.mean(noise**2))
    samples: bytes = np.clip(np.round(noise), -32768, 32767).astype("<i2").tobytes()
    return samples


def _speech_rms(clean: np.ndarray, pcm16: bytes, rate: int) -> float:
    spans = speech_segments(pcm16, rate)
    parts = [clean[int(s * rate / 1000) : int(e * rate / 1000)] for s, e in spans]
    voiced = np.concatenate(parts) if parts else clean
    return float(np.sqrt(np.mean(voiced**2))) or 1.0
