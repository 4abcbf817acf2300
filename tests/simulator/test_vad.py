"""Server VAD on real speech (espeak-ng): turn boundaries within 100 ms of the waveform's truth.

The truth comes from the clean waveform, sample by sample (``speech_segments``), independently of
the detector's frames and levels. Noise is pink room noise with a drifting level.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest

from relay.simulator.audio import bytes_per_ms, encode
from relay.simulator.vad import VadEvent, VoiceActivityDetector
from tests.support.speech import speech_segments, speech_track, with_noise

TOLERANCE_MS = 100
UTTERANCES = (
    "Hello there.",
    "How is the weather in Paris today?",
    "Thanks, goodbye.",
    "She sells sea shells. Fine, thanks.",
    "Could you book a table for two at seven?",
    "Yes.",
)
RATE = {"pcm16": 24000, "pcmu": 8000, "pcma": 8000}


@cache
def _track(rate: int) -> bytes:
    return speech_track(UTTERANCES, rate, gap_ms=900)


def run_vad(audio: bytes, encoding: str, *, append_ms: int = 20, **config: Any) -> list[VadEvent]:
    """Feed ``audio`` as a client would, ``append_ms`` at a time; all events in order."""
    detection = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 0, "silence_duration_ms": 500}
    vad = VoiceActivityDetector({**detection, **config}, encoding)
    step = bytes_per_ms(encoding) * append_ms
    return [event for start in range(0, len(audio), step) for event in vad.feed(audio[start : start + step])]


def turns(events: list[VadEvent]) -> list[tuple[int, int]]:
    """(audio_start_ms, audio_end_ms) per turn; fails unless starts and stops alternate."""
    kinds = [event.kind for event in events]
    assert kinds == ["speech_started", "speech_stopped"] * (len(kinds) // 2), kinds
    return [(a.audio_start_ms, b.audio_end_ms) for a, b in zip(events[::2], events[1::2], strict=True)]


def assert_close(found: list[tuple[int, int]], truth: list[tuple[float, float]], shift_ms: float = 0) -> None:
    assert len(found) == len(truth), (found, truth)
    for (start, end), (true_start, true_end) in zip(found, truth, strict=True):
        assert abs(start - (true_start - shift_ms)) <= TOLERANCE_MS, (start, true_start, found)
        assert abs(end - true_end) <= TOLERANCE_MS, (end, true_end, found)


@pytest.mark.parametrize("encoding", ["pcm16", "pcmu", "pcma"])
def test_clean_speech_turns_match_the_waveform(encoding: str) -> None:
    clean = _track(RATE[encoding])
    truth = speech_segments(clean, RATE[encoding], min_gap_ms=500)
    assert len(truth) == len(UTTERANCES)  # the track really has one span per utterance
    assert_close(turns(run_vad(encode(clean, encoding), encoding)), truth)


@pytest.mark.parametrize(
    ("encoding", "snr_db"),
    [("pcm16", 20), ("pcm16", 30), ("pcmu", 25), ("pcma", 25)],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_noisy_speech_turns_match_the_clean_waveform(encoding: str, snr_db: float, seed: int) -> None:
    rate = RATE[encoding]
    clean = _track(rate)
    noisy = with_noise(clean, rate, snr_db, seed=seed)
    found = turns(run_vad(encode(noisy, encoding), encoding))
    assert_close(found, speech_segments(clean, rate, min_gap_ms=500))


def test_api_defaults_pad_the_start_and_split_at_short_pauses() -> None:
    """Live defaults (prefix 300 ms, silence 200 ms): sentence pauses inside a text end a turn."""
    clean = _track(24000)
    events = run_vad(clean, "pcm16", prefix_padding_ms=300, silence_duration_ms=200)
    truth = speech_segments(clean, 24000, min_gap_ms=200)
    assert len(truth) > len(UTTERANCES)  # espeak pauses at "shells." and "Fine,"
    assert_close(turns(events), truth, shift_ms=300)


def test_prefix_padding_never_reaches_before_the_first_audio() -> None:
    speech = speech_track(["Hello there."], 24000, lead_ms=100)
    started = run_vad(speech, "pcm16", prefix_padding_ms=300)[0]
    assert (started.kind, started.audio_start_ms) == ("speech_started", 0)


def test_tiny_and_odd_appends_give_the_same_events() -> None:
    """Appends of 1 to 7 bytes (half samples, partial frames) change nothing."""
    audio = with_noise(_track(24000), 24000, 25, seed=3)
    expected = run_vad(audio, "pcm16")
    vad = VoiceActivityDetector(
        {"type": "server_vad", "prefix_padding_ms": 0, "silence_duration_ms": 500}, "pcm16"
    )
    events: list[VadEvent] = []
    position, size = 0, 1
    while position < len(audio):
        events += vad.feed(audio[position : position + size])
        position, size = position + size, size % 7 + 1
    assert events == expected
    assert len(expected) == 2 * len(UTTERANCES)


def test_threshold_decides_how_loud_speech_must_be() -> None:
    quiet = _scaled(_track(24000), -20)  # about -40 dBFS: a soft voice, far from the mic
    assert len(turns(run_vad(quiet, "pcm16", threshold=0.5))) == len(UTTERANCES)
    assert run_vad(quiet, "pcm16", threshold=0.8) == []
    assert len(turns(run_vad(_track(24000), "pcm16", threshold=0.8))) == len(UTTERANCES)


def _scaled(pcm16: bytes, gain_db: float) -> bytes:
    samples = np.frombuffer(pcm16, "<i2").astype(np.float64) * 10 ** (gain_db / 20)
    return bytes(np.round(samples).astype("<i2").tobytes())
