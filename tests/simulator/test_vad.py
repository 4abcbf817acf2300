"""Server VAD on real speech: boundaries within 100 ms of the truth measured from the waveform."""

from __future__ import annotations

import numpy as np
import pytest

from relay.simulator.audio import pcm16_to_alaw, pcm16_to_ulaw
from relay.simulator.vad import VadEvent, VoiceActivityDetector
from tests.support.speech import speech_pcm16

RATE = 24000


def _truth(pcm: np.ndarray) -> tuple[float, float]:
    """First and last sample above -40 dBFS in 5 ms windows: where speech really is, in ms."""
    windows = pcm[: len(pcm) // 120 * 120].reshape(-1, 120).astype(np.float64)
    level = 20 * np.log10(np.sqrt(np.mean(windows**2, axis=1)) / 32768 + 1e-12)
    loud = np.nonzero(level > -40)[0]
    return loud[0] * 5.0, (loud[-1] + 1) * 5.0


def _run(audio: bytes, encoding: str, bytes_per_ms: int, **config: object) -> list[VadEvent]:
    vad = VoiceActivityDetector(
        {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 0,
            "silence_duration_ms": 500,
            **config,
        },
        encoding,
    )
    events: list[VadEvent] = []
    step = 20 * bytes_per_ms
    for start in range(0, len(audio), step):
        events += vad.feed(audio[start : start + step])
    return events


@pytest.mark.parametrize("encoding", ["pcm16", "pcmu", "pcma"])
@pytest.mark.parametrize("noise_db", [None, -55.0])
def test_speech_boundaries_within_100_ms(encoding: str, noise_db: float | None) -> None:
    utterances = ["Hello there.", "How is the weather in Paris today?", "Thanks, goodbye."]
    gap = np.zeros(RATE, dtype=np.int16)
    parts, truths, position = [gap], [], len(gap)
    for text in utterances:
        speech = np.frombuffer(speech_pcm16(text), "<i2")
        start, end = _truth(speech)
        truths.append((position / 24 + start, position / 24 + end))
        parts += [speech, gap]
        position += len(speech) + len(gap)
    signal = np.concatenate(parts).astype(np.float64)
    if noise_db is not None:
        signal += np.random.default_rng(1).standard_normal(len(signal)) * 32768 * 10 ** (noise_db / 20)
    pcm = np.clip(signal, -32768, 32767).astype("<i2").tobytes()
    audio, per_ms = {
        "pcm16": (pcm, 48),
        "pcmu": (pcm16_to_ulaw(_down(pcm)), 8),
        "pcma": (pcm16_to_alaw(_down(pcm)), 8),
    }[encoding]
    events = _run(audio, encoding, per_ms)
    starts = [e.audio_start_ms for e in events if e.kind == "speech_started"]
    stops = [e.audio_end_ms for e in events if e.kind == "speech_stopped"]
    assert len(starts) == len(stops) == len(utterances), events
    for (start, end), got_start, got_end in zip(truths, starts, stops, strict=True):
        assert abs(got_start - start) <= 100, (start, got_start)
        assert abs(got_end - end) <= 100, (end, got_end)


def _down(pcm: bytes) -> bytes:
    """24 kHz -> 8 kHz for the G.711 cases (a 3:1 average is enough for a detector)."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    usable = len(samples) // 3 * 3
    return samples[:usable].reshape(-1, 3).mean(axis=1).astype("<i2").tobytes()


def test_no_events_on_silence_or_low_noise() -> None:
    rng = np.random.default_rng(3)
    for level in (0.0, 0.001):
        audio = (rng.standard_normal(RATE * 3) * 32768 * level).astype("<i2").tobytes()
        assert _run(audio, "pcm16", 48) == []


def test_idle_timeout_fires_in_audio_time() -> None:
    silence = np.zeros(RATE * 7, dtype="<i2").tobytes()
    events = _run(silence, "pcm16", 48, idle_timeout_ms=5000)
    assert [e.kind for e in events] == ["timeout_triggered"]
    assert events[0].audio_end_ms == 5000
