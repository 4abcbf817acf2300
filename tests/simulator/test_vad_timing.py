"""Turn-detection settings in audio time: silence, idle timeout, semantic eagerness, quiet rooms."""

from __future__ import annotations

import numpy as np
import pytest

from relay.simulator.audio import encode
from relay.simulator.vad import SEMANTIC_MAX_WAIT_MS, SEMANTIC_SILENCE_MS, VadEvent, VoiceActivityDetector
from tests.simulator.test_vad import run_vad, turns
from tests.support.speech import room_noise, speech_pcm16, speech_segments, speech_track

RATE = 24000


def _silence(ms: int) -> bytes:
    return bytes(48 * ms)


def _trimmed(text: str) -> bytes:
    """espeak-ng's speech without the near-silence around it, so pauses are what the test says."""
    speech = speech_pcm16(text)
    [(start_ms, end_ms)] = speech_segments(speech, RATE, min_gap_ms=10_000)
    return speech[int(start_ms) * 48 : int(end_ms + 1) * 48]


def _emitted_at(vad: VoiceActivityDetector, audio: bytes) -> list[tuple[int, VadEvent]]:
    """Each event with the audio position (ms) at which the detector reported it."""
    found = []
    for start in range(0, len(audio), 480):  # 10 ms appends: positions exact to one frame
        found += [(vad.position_ms, event) for event in vad.feed(audio[start : start + 480])]
    return found


@pytest.mark.parametrize("silence_ms", [200, 500, 1000])
def test_speech_stops_after_the_configured_silence(silence_ms: int) -> None:
    vad = VoiceActivityDetector({"type": "server_vad", "silence_duration_ms": silence_ms}, "pcm16")
    found = _emitted_at(vad, speech_pcm16("Hello there.") + _silence(1500))
    (_, _started), (reported_at, stopped) = found
    assert stopped.kind == "speech_stopped"
    assert reported_at - stopped.audio_end_ms == pytest.approx(silence_ms, abs=20)


@pytest.mark.parametrize("encoding", ["pcm16", "pcmu"])
@pytest.mark.parametrize("level_dbfs", [-70.0, -55.0, -45.0, -35.0])
def test_room_noise_alone_starts_no_turn(encoding: str, level_dbfs: float) -> None:
    """Pink noise with a drifting level, from a quiet room up to a loud fan: no events."""
    rate = 24000 if encoding == "pcm16" else 8000
    noise = room_noise(rate * 10, rate, level_dbfs, seed=5)
    assert run_vad(encode(noise, encoding), encoding) == []


def test_digital_silence_and_hiss_start_no_turn() -> None:
    hiss = np.random.default_rng(4).normal(0, 30, RATE * 5).astype("<i2").tobytes()  # -61 dBFS
    assert run_vad(_silence(5000) + hiss, "pcm16") == []


def test_speech_is_still_found_after_noise_was_learnt() -> None:
    noise = np.frombuffer(room_noise(RATE * 8, RATE, -42, seed=6), "<i2").astype(np.int32)
    speech = np.frombuffer(speech_track(["Could you book a table?"], RATE, lead_ms=5000), "<i2")
    mixed = np.clip(noise[: speech.size] + speech, -32768, 32767).astype("<i2").tobytes()
    [(start, end)] = turns(run_vad(mixed, "pcm16"))
    [(true_start, true_end)] = speech_segments(speech.tobytes(), RATE, min_gap_ms=500)
    assert abs(start - true_start) <= 100
    assert abs(end - true_end) <= 100


def test_idle_timeout_fires_after_idle_audio_and_again_after_each_stretch() -> None:
    events = run_vad(_silence(12_000), "pcm16", idle_timeout_ms=5000)
    assert events == [
        VadEvent("timeout_triggered", 0, 5000),
        VadEvent("timeout_triggered", 5000, 10000),
    ]


def test_idle_timeout_counts_from_the_end_of_the_last_turn() -> None:
    vad = VoiceActivityDetector(
        {"type": "server_vad", "silence_duration_ms": 500, "idle_timeout_ms": 5000}, "pcm16"
    )
    found = _emitted_at(vad, _silence(3000) + speech_pcm16("Hello there.") + _silence(7000))
    kinds = [event.kind for _, event in found]
    assert kinds == ["speech_started", "speech_stopped", "timeout_triggered"]
    stopped_at, timeout = found[1][0], found[2][1]
    assert (timeout.audio_start_ms, timeout.audio_end_ms) == (stopped_at, stopped_at + 5000)


def test_no_idle_timeout_unless_configured_or_while_speaking() -> None:
    assert run_vad(_silence(40_000), "pcm16", idle_timeout_ms=None) == []
    talk = b"".join(_trimmed("How is the weather in Paris today?") + _silence(300) for _ in range(3))
    events = run_vad(talk + _silence(800), "pcm16", idle_timeout_ms=1000)  # 6 s, pauses of 300 ms
    assert [event.kind for event in events] == ["speech_started", "speech_stopped"]


def test_reset_forgets_the_turn_but_keeps_the_clock() -> None:
    vad = VoiceActivityDetector({"type": "server_vad", "prefix_padding_ms": 0}, "pcm16")
    speech = speech_pcm16("How is the weather in Paris today?")
    assert [event.kind for event in vad.feed(speech[: 48 * 600])] == ["speech_started"]
    vad.reset()  # a client commit in mid-speech
    assert vad.position_ms == 600
    assert not vad.speaking
    resumed = vad.feed(speech[48 * 600 :])
    assert resumed[0].kind == "speech_started"
    assert resumed[0].audio_start_ms >= 600


@pytest.mark.parametrize(("eagerness", "turn_count"), [("high", 3), ("medium", 2), ("auto", 2), ("low", 1)])
def test_semantic_vad_eagerness_sets_how_long_a_pause_ends_the_turn(eagerness: str, turn_count: int) -> None:
    """Pauses of 600 ms then 1200 ms: high ends a turn at both, medium at the long one, low at neither."""
    parts = [_trimmed("Could you book a table"), _silence(600), _trimmed("for two"), _silence(1200)]
    audio = b"".join([*parts, _trimmed("at seven?"), _silence(2000)])
    events = run_vad(audio, "pcm16", type="semantic_vad", eagerness=eagerness)
    assert len(turns(events)) == turn_count
    assert SEMANTIC_SILENCE_MS[eagerness] < SEMANTIC_MAX_WAIT_MS[eagerness]
