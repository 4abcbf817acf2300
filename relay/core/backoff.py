"""Retry policy as pure functions: how long to wait, and whether to retry at all."""

from __future__ import annotations

import random
from collections.abc import Iterator

# Closes the API uses for permanent problems (reference §1.1, §4): 3000 bad credentials,
# 4000 bad request shape (model, beta interface). Retrying those only repeats the failure.
FATAL_CLOSE_CODES = frozenset({3000, 4000})
FATAL_ERROR_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "invalid_model", "missing_model", "beta_api_shape_disabled"}
)


def delays(base: float, cap: float, attempts: int, rng: random.Random) -> Iterator[float]:
    """Exponential backoff with equal jitter: half of min(cap, base * 2**n) fixed, half random.

    Full jitter can draw near-zero waits several times in a row and spend the whole retry budget
    inside one short outage; keeping half of each step guarantees the budget spans at least half
    the exponential schedule, while the random half still spreads reconnect storms.
    """
    for attempt in range(attempts):
        step = min(cap, base * (2**attempt))
        yield step / 2 + rng.uniform(0, step / 2)


def classify_close(code: int | None, last_error_code: str | None) -> tuple[str, bool]:
    """The replacement cause for metrics (bounded) and whether the failure is permanent."""
    if code in FATAL_CLOSE_CODES or last_error_code in FATAL_ERROR_CODES:
        return "error", True
    if code in (1000, 1001, 1011):
        return str(code), False
    if code is None or code == 1006:
        return "1006", False
    return "error", False
