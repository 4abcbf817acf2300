"""``python -m bench.ab``, smoke-sized: another checkout's relay runs beside this one's, every
frame of each is matched, and the table reports each target's CPU per frame.

Timings are not asserted; the tool's use is comparing builds, which needs every row real.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from bench.ab import report, run

ROOT = Path(__file__).resolve().parents[2]


def test_two_checkouts_side_by_side_every_frame_matched() -> None:
    args = argparse.Namespace(
        sessions=2,
        duration=2.0,
        rounds=1,
        other=[str(ROOT)],  # an A/A run: this checkout in the other slot too
        env=["RELAY_REPLAY_MAX_ITEMS=7 PYTHONMALLOC=malloc"],  # and once more, with variables set
        python_build=False,
        no_nginx=True,
        no_floor=False,
        profile=None,
        perf=None,
    )
    rows = asyncio.run(run(args))
    names = [row.name for row in rows]
    with_env = "relay (RELAY_REPLAY_MAX_ITEMS=7 PYTHONMALLOC=malloc)"
    assert names == ["direct", "floor", "relay", f"relay ({ROOT})", with_env]
    for row in rows:
        assert row.lost == 0
        assert row.frames > 150  # 2 sessions x 2 s of 20 ms appends, and the answers' deltas
    for row in rows[1:]:  # CPU is read in 10 ms ticks: a smoke-sized round may show none
        assert row.user >= 0
        assert row.system >= 0
        assert len(row.rounds) == 1
        assert row.rounds[0] == pytest.approx((row.user + row.system) / row.frames * 1e6)
    table = report(rows)
    assert table.count("\n") == len(rows) + 1  # header, rule, one line per target
    assert f"| relay ({ROOT}) | {rows[-2].frames} | 0 |" in table
    for row in rows[1:]:  # every proxy's process set up its memory, so each faulted some pages in
        assert row.faults > 0
