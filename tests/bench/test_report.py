"""The capacity verdict: a bound is claimed only where the measurement can resolve it."""

from __future__ import annotations

import numpy as np

from bench.report import sweep_table
from bench.runner import PathResult


def _path(name: str, sessions: int, median_ms: float, p99_ms: float) -> PathResult:
    # 1000 samples: 98.5% at the median, the top 1.5% at the p99 value.
    values = np.array([median_ms] * 985 + [p99_ms] * 15, dtype=np.float64)
    return PathResult(name, sessions, values, values.copy(), 0, 2000, 1.0, 0.5)


def _verdict(*steps: tuple[int, PathResult, PathResult]) -> list[str]:
    sweep = [(count, {"direct": direct, "relay": relay}) for count, direct, relay in steps]
    return [line.strip() for line in sweep_table({"sweep": sweep}) if not line.startswith("|")]


def test_a_noisy_baseline_does_not_make_a_slow_relay_look_fast() -> None:
    lines = _verdict(
        (100, _path("direct", 100, 0.3, 1.0), _path("relay", 100, 0.5, 3.0)),
        # The direct path stalled (p99 23 ms): the relay's 9 ms p99 is "negative added" latency.
        (200, _path("direct", 200, 1.0, 23.0), _path("relay", 200, 1.1, 9.0)),
    )
    assert "Largest count with relay-added p99 < 5 ms: 100" in lines
    assert any(line.startswith("Not measurable here: at 200 sessions") for line in lines)


def test_a_relay_path_under_the_bound_on_its_own_is_shown_even_over_a_noisy_baseline() -> None:
    lines = _verdict((200, _path("direct", 200, 1.0, 23.0), _path("relay", 200, 1.1, 4.0)))
    assert "Largest count with relay-added p99 < 5 ms: 200" in lines
    assert not any(line.startswith("Not measurable") for line in lines)


def test_over_the_bound_against_a_steady_baseline_is_a_measured_miss() -> None:
    lines = _verdict(
        (50, _path("direct", 50, 0.2, 0.8), _path("relay", 50, 0.4, 2.0)),
        (200, _path("direct", 200, 0.4, 1.5), _path("relay", 200, 2.0, 12.0)),
    )
    assert "Largest count with relay-added p99 < 5 ms: 50" in lines
    assert not any(line.startswith("Not measurable") for line in lines)
