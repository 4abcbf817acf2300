"""Overload, sans I/O: how late the event loop runs, and whether to admit new sessions.

A saturated relay process slows every session alike: each frame waits behind every other. The
loop's lag (how late a timer fires) is the direct measure of that wait, so the relay samples it a
few times a second and, while its smoothed value is over a threshold, refuses new sessions (503
with ``Retry-After``) so that the sessions it already serves keep their latency. Resumes of
existing conversations are still admitted: they are load the process already carries.

Lag shows saturation once it has happened: a loop 95% busy still fires its timers nearly on
time, yet its frames already queue behind each other for milliseconds. So the process's CPU
share (of the one core an event loop can use) may be judged too, smoothed over about half a
second so that a burst of handshakes does not trip it: above ``cpu_threshold`` new sessions go
elsewhere while the admitted ones keep their latency (``bench/overload.py`` measures it).

Hysteresis keeps the decision from flapping: admission stops above a threshold and restarts
only once the lag is back under half of it and the CPU share ten points under its own.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_INTERVAL_S = 0.1
_ALPHA = 0.3  # weight of a new sample: ~0.5 s to react to a saturated loop
_CPU_ALPHA = 0.2  # ~0.5 s: sessions come and go over minutes, a handshake burst in a moment
_CPU_HYSTERESIS = 0.1
_CPU_RETRY_AFTER_S = 5


@dataclass
class LagMeter:
    threshold_s: float  # 0: lag never refuses admission
    cpu_threshold: float = 0.0  # share of one core; 0: CPU never refuses admission
    smoothed_s: float = 0.0
    cpu_share: float = 0.0  # smoothed
    sessions: float = 0.0  # smoothed alike: their ratio is what one session costs
    overloaded: bool = False
    worst_s: float = 0.0  # the largest single sample, for the gauge's reader

    def sample(self, late_s: float, cpu_share: float = 0.0, sessions: int = 0) -> bool:
        """One timer's lateness, the CPU share since the last sample and the sessions served;
        returns whether new sessions are refused from now on."""
        late_s = max(0.0, late_s)
        self.worst_s = max(self.worst_s, late_s)
        self.smoothed_s += _ALPHA * (late_s - self.smoothed_s)
        self.cpu_share += _CPU_ALPHA * (cpu_share - self.cpu_share)
        self.sessions += _CPU_ALPHA * (sessions - self.sessions)
        self.overloaded = self._lag_over() or self._cpu_over()
        return self.overloaded

    def admits(self, sessions: int) -> bool:
        """Whether one more session may start now, with ``sessions`` already here.

        The smoothed share lags the sessions admitted in the last second, which have not shown
        their cost yet: at ten arrivals a second that overshot an 85% threshold up to the full
        core. So a new session is also judged by what the ones here cost each, on average.
        """
        if self.overloaded:
            return False
        if self.cpu_threshold <= 0 or self.sessions < 1:
            return True
        return self.cpu_share / self.sessions * (sessions + 1) <= self.cpu_threshold

    def _lag_over(self) -> bool:
        if self.threshold_s <= 0:
            return False
        return self.smoothed_s > (self.threshold_s / 2 if self.overloaded else self.threshold_s)

    def _cpu_over(self) -> bool:
        if self.cpu_threshold <= 0:
            return False
        limit = self.cpu_threshold - (_CPU_HYSTERESIS if self.overloaded else 0.0)
        return self.cpu_share > limit

    @property
    def reason(self) -> str:
        """What a refusal says: the lag if it is over (or the only thing judged), else the CPU."""
        if self._lag_over() or self.cpu_threshold <= 0:
            return f"its event loop runs {self.smoothed_s * 1000:.0f} ms late"
        return f"it uses {self.cpu_share:.0%} of its core and admits sessions up to {self.cpu_threshold:.0%}"

    def retry_after_s(self) -> int:
        """A client told to come back later: sooner for a brief spike, later for a long one. A
        full core frees up only as sessions end (minutes), and each refusal costs the relay
        ~0.6 ms of CPU, so for that the answer is 5 s."""
        lag = round(self.smoothed_s / max(self.threshold_s, 1e-3)) if self.threshold_s > 0 else 1
        return max(1 if self._lag_over() else _CPU_RETRY_AFTER_S, min(30, lag))
