"""Overload, sans I/O: how late the event loop runs, and whether to admit new sessions.

A saturated relay process slows every session alike: each frame waits behind every other. The
loop's lag (how late a timer fires) is the direct measure of that wait, so the relay samples it a
few times a second and, while its smoothed value is over a threshold, refuses new sessions (503
with ``Retry-After``) so that the sessions it already serves keep their latency. Resumes of
existing conversations are still admitted: they are load the process already carries.

Hysteresis keeps the decision from flapping: admission stops above the threshold and restarts
only once the lag is back under half of it.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_INTERVAL_S = 0.1
_ALPHA = 0.3  # weight of a new sample: ~0.5 s to react to a saturated loop


@dataclass
class LagMeter:
    threshold_s: float  # 0: admission is never refused
    smoothed_s: float = 0.0
    overloaded: bool = False
    worst_s: float = 0.0  # the largest single sample, for the gauge's reader

    def sample(self, late_s: float) -> bool:
        """One timer's lateness; returns whether new sessions are refused from now on."""
        late_s = max(0.0, late_s)
        self.worst_s = max(self.worst_s, late_s)
        self.smoothed_s += _ALPHA * (late_s - self.smoothed_s)
        if self.threshold_s <= 0:
            return False
        if self.overloaded:
            self.overloaded = self.smoothed_s > self.threshold_s / 2
        else:
            self.overloaded = self.smoothed_s > self.threshold_s
        return self.overloaded

    def retry_after_s(self) -> int:
        """A client told to come back later: sooner for a brief spike, later for a long one."""
        return max(1, min(30, round(self.smoothed_s / max(self.threshold_s, 1e-3))))
