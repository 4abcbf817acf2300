"""``python -m bench.event_times``, smoke-sized: a relay with its full path timed in place, under
voice sessions with turns, reports every event the lanes leave to that path, and none they take.

Timings are not asserted; what is, is that the times are the relay's real events, counted right.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.event_times import CLIENT, SERVER, measure, read, table


def test_each_turn_events_are_timed_and_the_lanes_frames_are_not(tmp_path: Path) -> None:
    cpu_s = asyncio.run(measure(3, 4.0, tmp_path / "times.json"))
    times, turns = read(tmp_path / "times.json")
    assert turns == 3  # first turns spread over 1.5-3.5 s, the next 3 s later: one per session
    for kind in ("input_audio_buffer.commit", "response.create"):
        assert len(times[f"{CLIENT} {kind}"]) == turns, kind
    assert len(times[f"{SERVER} response.done"]) == turns
    assert len(times[f"{CLIENT} session.update"]) == len(times[f"{SERVER} session.created"]) == 3
    # The lanes' frames (~50 appends and deltas a second per session) never reach the full path
    # in steady state; at most a few around a session's start, before the upstream is ready.
    lane_frames = sum(
        len(v)
        for k, v in times.items()
        if k.endswith(("input_audio_buffer.append", "response.output_audio.delta"))
    )
    assert lane_frames < 3 * 10
    assert all(value > 0 for values in times.values() for value in values)
    rendered = table(times, max(cpu_s, 1e-3), turns)
    assert f"| {SERVER} response.done | {turns} |" in rendered
    assert f"| all full-path events | {sum(len(v) for v in times.values())} |" in rendered
