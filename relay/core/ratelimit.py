"""A token bucket: how often something may happen, with a burst; time is passed in (sans I/O)."""

from __future__ import annotations


class TokenBucket:
    """``rate`` events a second on average, up to ``burst`` at once; the rest are refused and
    counted in ``refused`` (so what was held back can still be reported)."""

    __slots__ = ("_level", "_updated", "burst", "rate", "refused")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._level = burst
        self._updated: float | None = None
        self.refused = 0

    def take(self, now: float) -> bool:
        if self._updated is not None:
            self._level = min(self.burst, self._level + (now - self._updated) * self.rate)
        self._updated = now
        if self._level >= 1:
            self._level -= 1
            return True
        self.refused += 1
        return False
