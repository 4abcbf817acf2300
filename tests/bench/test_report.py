"""The capacity verdict: a bound is claimed only where the measurement can resolve it."""

from __future__ import annotations

import numpy as np
import pytest

from bench.load import Stamps
from bench.overload import p99_steady_seconds
from bench.report import capacity_lines, overload_lines, sweep_table
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


def test_each_sweep_step_says_how_often_the_load_process_itself_stopped() -> None:
    step = {"direct": _path("direct", 400, 0.3, 4.0), "relay": _path("relay", 400, 0.5, 12.0)}
    stalls = {"direct": [(1.0, 6.0)], "nginx": [(2.0, 30.0)], "relay": [(3.0, 7.2), (4.0, 16.4)]}

    def row(stalled: dict[str, list[tuple[float, float]]]) -> str:
        table = sweep_table({"sweep": [(400, step)], "sweep_stalls": [stalled]})
        (line,) = [line for line in table if line.startswith("| 400 |")]
        return line

    assert row(stalls).endswith("| 1 / 2 (longest 16 ms) |")  # nginx's rounds are not the relay's
    assert row({"direct": [], "relay": []}).endswith("| 0 / 0 |")


def _cpu_path(name: str, frames: int, cpu_s: float, steady_cpu_s: float) -> PathResult:
    values = np.array([1.0] * 10, dtype=np.float64)
    path = PathResult(name, 100, values, values.copy(), 0, frames, cpu_s, cpu_s / 10)
    path.steady_cpu_s = steady_cpu_s
    return path


def test_steady_state_is_reported_apart_from_opening_and_closing_sessions() -> None:
    # Per 1000 frames: nginx 1.0 s in all, 0.9 s with every session open; the relay 2.5 s and 1.8 s.
    nginx = _cpu_path("nginx", 1000, 1.0, 0.9)
    relay = _cpu_path("relay", 1000, 2.5, 1.8)
    lines = capacity_lines({"paths": [nginx, relay]})
    assert "CPU per frame against nginx's: relay 2.50x (target <= 1.5x)" in lines
    assert any(
        line.startswith("Target CPU per frame <= 1.5x nginx's: not met, by 1.67x (relay 2.50x)")
        for line in lines
    )
    assert "In steady state (every session open): CPU per frame against nginx's: relay 2.00x" in lines
    # (2.5 - 1.8) s over 100 sessions, and (1.0 - 0.9) s over 100.
    assert "CPU per session opened and closed: nginx 1.00 ms, relay 7.00 ms" in lines
    # 0.25 of a core for 100 sessions; 0.18 of it with the sessions open: ~556 long sessions.
    capacity = "one core is full at ~400 voice sessions (~556 when sessions are long"
    assert any(capacity in line for line in lines)


def test_without_a_steady_window_only_the_whole_round_is_reported() -> None:
    nginx = PathResult("nginx", 100, np.ones(10), np.ones(10), 0, 1000, 1.0, 0.1)
    relay = PathResult("relay", 100, np.ones(10), np.ones(10), 0, 1000, 2.5, 0.25)
    lines = capacity_lines({"paths": [nginx, relay]})
    assert "CPU per frame against nginx's: relay 2.50x (target <= 1.5x)" in lines
    assert not any("steady state" in line or "when sessions are long" in line for line in lines)


def test_a_met_cpu_target_is_said_so() -> None:
    nginx = _cpu_path("nginx", 1000, 1.0, 0.9)
    relay = _cpu_path("relay", 1000, 1.4, 1.3)
    assert "Target CPU per frame <= 1.5x nginx's: met (relay 1.40x)" in capacity_lines(
        {"paths": [nginx, relay]}
    )


def _overload_row(relay: PathResult, **measured: object) -> dict[str, object]:
    """An overload row as bench.overload returns it: 300 of 600 admitted, the rest refused cleanly."""
    return {
        "offered": 600,
        "rate": 10.0,
        "cpu_percent": 40.0,
        "admitted": 300,
        "refused_clean": 300,
        "refused_while_measured": 150,
        "refused_other": 0,
        "refused_other_examples": [],
        "relay_core_share": 0.4,
        "relay_cpu_share_seen": [0.39, 0.41],
        "relay": relay,
        "direct": _path("direct", 300, 0.3, 1.0),
        **measured,
    }


def test_the_overload_row_says_where_its_slow_frames_were_and_whose_stop_it_was() -> None:
    over = _overload_row(
        _path("relay", 300, 0.5, 9.0),
        p99_per_second=["0: 2.1 / 2.0", "1: 53.0 / 41.2"],
        load_stalls_ms=[(1.23, 53.0), (4.5, 7.2)],
    )
    lines = overload_lines({"overload": over})
    assert "Overload window, relay p99 c2u / u2c (ms) per second: 0: 2.1 / 2.0, 1: 53.0 / 41.2" in lines
    (stalls,) = [line for line in lines if "own stalls in that window" in line]
    assert ": 2, the longest 53 ms at 1.2 s" in stalls
    over["load_stalls_ms"] = []
    (stalls,) = [line for line in overload_lines({"overload": over}) if "own stalls" in line]
    assert "or more): 0 (while it stalls" in stalls


def test_the_overload_row_gives_the_relays_p99_over_the_seconds_the_load_side_was_steady() -> None:
    stamps = Stamps()
    for i in range(300):  # 3 s of frames, 100 a second; every frame of the middle second 40 ms late
        sent = 100.0 + i / 100
        late = 0.040 if 1 <= i // 100 < 2 else 0.001
        stamps.c2u_sent[f"c{i}"], stamps.c2u_recv[f"c{i}"] = sent, sent + late
        stamps.u2c_sent[f"u{i}"], stamps.u2c_recv[f"u{i}"] = sent, sent + late
    whole = stamps.latencies("c2u")
    assert np.percentile(whole, 99) > 39  # the whole window's p99 is the stalled second's
    # The load process stopped for 45 ms ending 1.5 s in: the second it fell in is left out.
    steady = p99_steady_seconds(stamps, [(101.5, 45.0)])
    assert (steady["seconds"], steady["of"]) == (2, 3)
    assert steady["c2u"] == pytest.approx(1.0)
    assert steady["u2c"] == pytest.approx(1.0)
    # A stall the relay's slow second did not coincide with leaves that second in.
    elsewhere = p99_steady_seconds(stamps, [(102.5, 45.0)])
    assert (elsewhere["seconds"], elsewhere["of"]) == (2, 3)
    assert elsewhere["c2u"] > 39
    # A stall across a second's edge loses both seconds.
    assert p99_steady_seconds(stamps, [(102.02, 45.0)])["seconds"] == 1

    over = _overload_row(_path("relay", 300, 0.5, 40.0), p99_steady_seconds=steady)
    (line,) = [line for line in overload_lines({"overload": over}) if "seconds with no stall" in line]
    assert "over the 2 of 3 seconds" in line
    assert "c2u 1.00 / u2c 1.00 ms (its own p99 under 5 ms" in line
