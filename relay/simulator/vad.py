"""Server-side turn detection on real audio: an energy-based voice activity detector.

It works on 10 ms frames in audio time (never wall time), so results do not depend on how fast a
client streams. Each frame's level is its energy in the speech band (150 Hz - 8 kHz: below, hum
and rumble; above, nothing a voice needs), smoothed over 30 ms, in dBFS.

A frame is loud when its level clears two bars, both set by ``threshold`` (0..1, API default 0.5):
  * an absolute one, ``-45 dBFS`` at 0.5 and 6 dB per 0.1 (so 0.9 wants raised voices and 0.1
    hears whispers), which alone keeps silence and quiet rooms free of events;
  * a margin over the room's noise floor, ``4 + 12 * threshold`` dB (10 dB at 0.5), so steady
    background noise louder than the absolute bar (fans, traffic) is learnt and ignored.
The noise floor follows quieter frames at once and louder ones slowly (about 1 s; 10 s while
someone speaks, so a noise that starts in mid-turn still ends the turn eventually).

Speech starts after 30 ms of loud frames; it stops after ``silence_duration_ms`` without a frame
within 3 dB of the bar (hysteresis keeps soft word endings in the turn). Reported times follow the
API: ``audio_start_ms`` is the onset minus ``prefix_padding_ms`` (not below 0) and
``audio_end_ms`` is where speech ended, before the silence that confirmed it. Both are ms of audio
since the session's first append; the clock survives ``reset()``.

``semantic_vad`` has no language model here. It is approximated by how long a pause ends a turn,
per eagerness: ``high`` 400 ms, ``medium``/``auto`` 800 ms, ``low`` 1600 ms. These are typical
pauses at the end of a finished sentence, well under the API's maximum waits (2 s / 4 s / 8 s),
which apply when the words sound unfinished; the simulator cannot tell, so it uses the typical.

``idle_timeout_ms`` fires ``timeout_triggered`` after that much audio without speech since the
last turn ended (or the session began, or the last commit/clear), and again after each further
such stretch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from relay.simulator.audio import bytes_per_ms, rate_of, to_pcm16

FRAME_MS = 10
ONSET_FRAMES = 3  # 30 ms of loud frames start speech: clicks and pops do not
SMOOTH_FRAMES = 3  # levels are averaged over 30 ms, so they lag by one frame
HYSTERESIS_DB = 3.0
BAND_HZ = (150.0, 8000.0)
SILENCE_FLOOR_DBFS = -110.0  # the level of digital silence (keeps logs finite)
SEMANTIC_SILENCE_MS = {"high": 400, "medium": 800, "auto": 800, "low": 1600}
SEMANTIC_MAX_WAIT_MS = {"high": 2000, "medium": 4000, "auto": 4000, "low": 8000}  # the API's, for reference
_SILENCE_ENERGY = 10 ** (SILENCE_FLOOR_DBFS / 10)
_FLOOR_FALL = 0.3  # per frame, towards a quieter level
_FLOOR_RISE = 0.01  # per frame between turns: ~1 s to learn a louder room
_FLOOR_RISE_IN_SPEECH = 0.001  # per frame during speech: ~10 s

VadKind = Literal["speech_started", "speech_stopped", "timeout_triggered"]


@dataclass(frozen=True, slots=True)
class VadEvent:
    kind: VadKind
    audio_start_ms: int
    audio_end_ms: int


def absolute_bar_dbfs(threshold: float) -> float:
    """The speech-band level a frame must reach whatever the room: -45 dBFS at 0.5."""
    return -45.0 + (threshold - 0.5) * 60.0


def noise_margin_db(threshold: float) -> float:
    """How far above the learnt noise floor a frame must be: 10 dB at 0.5."""
    return 4.0 + 12.0 * threshold


class _BandLevels:
    """Turns appended bytes into smoothed speech-band levels, one per whole 10 ms frame."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        rate = rate_of(encoding)
        self.frame_samples = rate * FRAME_MS // 1000
        self.frame_bytes = bytes_per_ms(encoding) * FRAME_MS
        frequencies = np.fft.rfftfreq(self.frame_samples, 1 / rate)
        self._band = (frequencies >= BAND_HZ[0]) & (frequencies <= BAND_HZ[1])
        # Parseval: the band's share of the frame's mean square, in units of full scale.
        self._scale = 2.0 / (self.frame_samples**2 * 32768.0**2)
        self._pending = b""
        self._recent: list[float] = []  # the last frames' energies: smoothing spans appends

    def push(self, audio: bytes) -> list[float]:
        data = self._pending + audio
        usable = len(data) - len(data) % self.frame_bytes
        self._pending = data[usable:]
        if not usable:
            return []
        frames = to_pcm16(data[:usable], self.encoding).reshape(-1, self.frame_samples)
        spectrum = np.fft.rfft(frames, axis=1)[:, self._band]
        energies = np.einsum("ij,ij->i", spectrum.real, spectrum.real)
        energies += np.einsum("ij,ij->i", spectrum.imag, spectrum.imag)
        return [self._smoothed_db(energy * self._scale) for energy in energies.tolist()]

    def _smoothed_db(self, energy: float) -> float:
        recent = self._recent
        recent.append(energy)
        if len(recent) > SMOOTH_FRAMES:
            del recent[0]
        return 10 * math.log10(max(sum(recent) / len(recent), _SILENCE_ENERGY))


@dataclass(slots=True)
class _Turn:
    """Where the detector is in the current turn, in audio ms."""

    speaking: bool = False
    loud_run: int = 0
    last_loud_ms: int = 0
    idle_since_ms: int = 0


class VoiceActivityDetector:
    """Feeds on appended input audio; answers the turn events the API would send for it."""

    def __init__(self, turn_detection: Mapping[str, Any], encoding: str) -> None:
        """``turn_detection`` is the GA session object; ``encoding`` is pcm16, pcmu or pcma."""
        threshold = _number(turn_detection.get("threshold"), 0.5)
        self.prefix_ms = int(_number(turn_detection.get("prefix_padding_ms"), 300))
        self.silence_ms = _silence_ms(turn_detection)
        idle = turn_detection.get("idle_timeout_ms")
        self.idle_ms: int | None = int(idle) if idle else None
        self.absolute_db = absolute_bar_dbfs(threshold)
        self.margin_db = noise_margin_db(threshold)
        self._levels = _BandLevels(encoding)
        self.noise_floor_db: float | None = None
        self.position_ms = 0  # audio since the session's first append (the owner may set it)
        self._turn = _Turn()

    @property
    def speaking(self) -> bool:
        return self._turn.speaking

    def feed(self, audio: bytes) -> list[VadEvent]:
        """Analyse appended audio (any length; partial frames wait for the next append)."""
        events: list[VadEvent] = []
        for level in self._levels.push(audio):
            self.position_ms += FRAME_MS
            event = self._step(level)
            if event is not None:
                events.append(event)
        return events

    def reset(self) -> None:
        """After a commit or clear: forget a turn in progress; keep the clock and the room."""
        self._turn = _Turn(idle_since_ms=self.position_ms)

    def _step(self, level: float) -> VadEvent | None:
        floor = level if self.noise_floor_db is None else self.noise_floor_db
        bar = max(self.absolute_db, floor + self.margin_db)
        event = self._continue_turn(level, bar) if self._turn.speaking else self._await_speech(level, bar)
        self._learn_floor(floor, level)
        return event

    def _await_speech(self, level: float, bar: float) -> VadEvent | None:
        turn, now = self._turn, self.position_ms
        turn.loud_run = turn.loud_run + 1 if level >= bar else 0
        if turn.loud_run >= ONSET_FRAMES:
            # The smoothed level lags a frame; a turn cannot begin before the last commit/clear.
            onset = max(turn.idle_since_ms, now - (turn.loud_run + SMOOTH_FRAMES // 2) * FRAME_MS)
            self._turn = _Turn(speaking=True, last_loud_ms=now)
            start = max(0, onset - self.prefix_ms)
            return VadEvent("speech_started", start, start)
        if self.idle_ms is not None and turn.loud_run == 0 and now - turn.idle_since_ms >= self.idle_ms:
            start, turn.idle_since_ms = turn.idle_since_ms, now
            return VadEvent("timeout_triggered", start, now)
        return None

    def _continue_turn(self, level: float, bar: float) -> VadEvent | None:
        turn, now = self._turn, self.position_ms
        if level >= bar - HYSTERESIS_DB:
            turn.last_loud_ms = now
            return None
        if now - turn.last_loud_ms < self.silence_ms:
            return None
        end = max(0, turn.last_loud_ms - SMOOTH_FRAMES // 2 * FRAME_MS)
        self._turn = _Turn(idle_since_ms=now)
        return VadEvent("speech_stopped", end, end)

    def _learn_floor(self, floor: float, level: float) -> None:
        rising = _FLOOR_RISE_IN_SPEECH if self._turn.speaking else _FLOOR_RISE
        self.noise_floor_db = floor + (level - floor) * (_FLOOR_FALL if level < floor else rising)


def _number(value: Any, default: float) -> float:
    return default if value is None else float(value)


def _silence_ms(turn_detection: Mapping[str, Any]) -> int:
    if turn_detection.get("type") == "semantic_vad":
        eagerness = str(turn_detection.get("eagerness") or "auto")
        return SEMANTIC_SILENCE_MS.get(eagerness, SEMANTIC_SILENCE_MS["auto"])
    return int(_number(turn_detection.get("silence_duration_ms"), 500))
