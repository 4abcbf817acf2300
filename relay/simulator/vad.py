"""Server-side turn detection on real audio: an energy-based voice activity detector.

It works on 10 ms frames in audio time (not wall time), so results do not depend on how fast a
client streams. ``threshold`` (0..1, API default 0.5) maps onto a frame level in dBFS: 0.5 is
-45 dBFS, each 0.1 moves it 6 dB. Reported times follow the API: ``audio_start_ms`` is the
onset minus ``prefix_padding_ms``; ``audio_end_ms`` is where speech ended (before the silence
that confirmed it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from relay.simulator.audio import bytes_per_ms, to_pcm16

FRAME_MS = 10
_HANGOVER_FRAMES = 3  # a speech onset needs 30 ms above threshold (rejects clicks)
# semantic_vad has no acoustic model here: eagerness picks how long a pause ends a turn.
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 700, "auto": 700, "high": 350}


@dataclass(frozen=True, slots=True)
class VadEvent:
    kind: Literal["speech_started", "speech_stopped", "timeout_triggered"]
    audio_start_ms: int
    audio_end_ms: int


def threshold_dbfs(threshold: float) -> float:
    return -45.0 + (threshold - 0.5) * 60.0


class VoiceActivityDetector:
    def __init__(self, turn_detection: Mapping[str, Any], encoding: str) -> None:
        kind = turn_detection.get("type", "server_vad")
        self.encoding = encoding
        threshold = turn_detection.get("threshold")
        self.level_db = threshold_dbfs(0.5 if threshold is None else float(threshold))
        prefix = turn_detection.get("prefix_padding_ms")
        self.prefix_ms = int(300 if prefix is None else prefix)
        if kind == "semantic_vad":
            eagerness = str(turn_detection.get("eagerness") or "auto")
            self.silence_ms = SEMANTIC_SILENCE_MS.get(eagerness, 700)
        else:
            silence = turn_detection.get("silence_duration_ms")
            self.silence_ms = int(500 if silence is None else silence)
        idle = turn_detection.get("idle_timeout_ms")
        self.idle_ms = int(idle) if idle else None
        self._frame_bytes = bytes_per_ms(encoding) * FRAME_MS
        self._pending = b""
        self.position_ms = 0  # audio time since the session's first append
        self.speaking = False
        self._loud_run = 0
        self._onset_ms = 0
        self._last_loud_ms = 0
        self._idle_since_ms = 0

    def feed(self, audio: bytes) -> list[VadEvent]:
        data = self._pending + audio
        usable = len(data) - len(data) % self._frame_bytes
        self._pending = data[usable:]
        if not usable:
            return []
        levels = self._frame_levels(data[:usable])
        events: list[VadEvent] = []
        for level in levels:
            self.position_ms += FRAME_MS
            event = self._step(level >= self.level_db)
            if event is not None:
                events.append(event)
        return events

    def _frame_levels(self, data: bytes) -> np.ndarray:
        samples = to_pcm16(data, self.encoding).reshape(-1, self._samples_per_frame())
        rms = np.sqrt(np.mean(samples * samples, axis=1)) + 1e-9
        return np.asarray(20 * np.log10(rms / 32768.0))

    def _samples_per_frame(self) -> int:
        return FRAME_MS * (24 if self.encoding == "pcm16" else 8)

    def _step(self, loud: bool) -> VadEvent | None:
        now = self.position_ms
        if not self.speaking:
            self._loud_run = self._loud_run + 1 if loud else 0
            if self._loud_run >= _HANGOVER_FRAMES:
                self.speaking = True
                self._onset_ms = now - _HANGOVER_FRAMES * FRAME_MS
                self._last_loud_ms = now
                start = max(0, self._onset_ms - self.prefix_ms)
                return VadEvent("speech_started", start, start)
            if self.idle_ms is not None and now - self._idle_since_ms >= self.idle_ms:
                self._idle_since_ms = now
                return VadEvent("timeout_triggered", max(0, now - self.idle_ms), now)
            return None
        if loud:
            self._last_loud_ms = now
        elif now - self._last_loud_ms >= self.silence_ms:
            self.speaking = False
            self._loud_run = 0
            self._idle_since_ms = now
            return VadEvent("speech_stopped", self._last_loud_ms, self._last_loud_ms)
        return None

    def reset(self) -> None:
        """After a commit or clear: forget a turn in progress, keep the audio clock."""
        self.speaking = False
        self._loud_run = 0
        self._idle_since_ms = self.position_ms
