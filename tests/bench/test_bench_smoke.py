"""The benchmark harness, smoke-sized: counts frames both ways, loses none, writes its report.

Correctness of the harness only; timings are not asserted (they belong in the report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path

from bench.report import write_report
from bench.runner import FLOOR, PYTHON_BUILD, benchmark


def test_smoke_run_counts_every_frame_and_writes_the_report(tmp_path: Path) -> None:
    args = argparse.Namespace(
        sessions=2,
        duration=2.0,
        sweep=[2, 5000],
        sweep_duration=1.5,
        idle_sessions=5,
        trials=1,  # the interleaving of paths is exercised either way; one round keeps it short
        budget=20.0,  # the small step fits; the 5000-session one (~60 s by the estimate) never does
        floor_rounds=20,
        rotation_sessions=2,
        rotation_duration=5.0,
        rotation_set_up_ms=[300.0],
        open_mic_sessions=3,
        open_mic_duration=3.0,
        resume_conversations=0,  # tests/bench/test_resume_bench.py
        overload_offered=4,
        overload_rate=20.0,
        overload_cpu_percent=100.0,  # the plumbing only: refusals are tests/io/test_overload.py's
        python_build=True,
        floor=True,
        profile=True,  # run under perf where it can sample; else the report says why not
    )
    results = asyncio.run(benchmark(args))
    paths = {p.path: p for p in results["paths"]}
    assert {"direct", "relay", PYTHON_BUILD, FLOOR} <= paths.keys()
    for path in paths.values():
        assert path.lost == 0
        assert len(path.c2u) > 50  # 2 sessions x 2 s of 20 ms appends, each matched end to end
        assert len(path.u2c) > 0  # audio deltas of the answers, matched by event id
    assert paths["relay"].cpu_s is not None
    # The steady window is inside the round (CPU times tick in 10 ms: two sessions' opening and
    # closing may not show).
    steady = paths["relay"].steady_cpu_s
    assert steady is not None
    assert 0 < steady <= paths["relay"].cpu_s
    # 2 sessions x 2 s x 50 appends/s, each matched end to end.
    assert len(paths["relay"].c2u) > 150
    # The sweep ran the small step on every path and skipped the one the time budget cannot hold.
    assert [count for count, _ in results["sweep"]] == [2]
    assert results["skipped"] == [5000]
    step = results["sweep"][0][1]
    assert step.keys() == paths.keys() - {PYTHON_BUILD, FLOOR}  # both builds and the floor: main run only
    assert all(p.lost == 0 and len(p.c2u) > 100 for p in step.values())
    (stalls,) = results["sweep_stalls"]  # the step ran in a process of its own, which watched itself
    assert stalls.keys() == step.keys()
    table = write_report(results, tmp_path)
    assert "| relay | 2 | c2u |" in table
    assert "Largest count with relay-added p99 < 5 ms" in table
    assert "load process stalls, direct / relay rounds |" in table
    assert re.search(r"own core .*: p50 [0-9.]+ ms, p99 [0-9.]+ ms", table)
    assert re.search(r"without sockets .*: 20 ms append [0-9.]+ us, audio delta [0-9.]+ us", table)
    assert f"| {PYTHON_BUILD} | 2 | c2u |" in table
    assert re.search(r"pure-Python build \(RELAY_NO_EXTENSIONS=1\): append [0-9.]+ us", table)
    capacity = r"relay CPU: [0-9.]+ ms per session-second: one core is full at ~[0-9]+ voice sessions"
    assert re.search(capacity, table)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["paths"][0]["path"] == "direct"
    assert (tmp_path / "latency.png").stat().st_size > 1000
    assert results["rss_per_session"] > 0
    (rotation,) = results["rotation"]  # with the live API's timing
    assert rotation["rotations"] >= 2
    assert rotation["lost"] == 0
    assert rotation["appends"] > 400
    assert rotation["responses_cut"] == 0
    assert "open microphones (server VAD)" in table
    assert len(results["open_mic"]["kib_per_session"]) == 3
    assert "resume" not in results
    over = results["overload"]
    assert over["admitted"] >= 4
    assert over["refused_other"] == 0
    assert over["relay"].lost == 0
    assert len(over["relay"].c2u) > 100
    assert over["direct"].sessions == over["admitted"]
    assert re.search(r"Overload: [0-9]+ apps offered .* admitted, 0 refused with 503", table)
    assert saved["overload"]["relay"]["path"] == "relay"
    assert over["p99_per_second"]  # where in the window the slow frames were
    assert isinstance(over["load_stalls_ms"], list)
    assert 0 < over["p99_steady_seconds"]["seconds"] <= over["p99_steady_seconds"]["of"]
    assert "The load process's own stalls in that window" in table
    if "skipped" in results["profile"]:
        assert f"No profile of CPU per frame: {results['profile']['skipped']}." in table
    else:
        names = [*(["nginx"] if results["nginx"] else []), "relay", FLOOR]
        assert [split.name for split in results["profile"]["splits"]] == names
        assert f"| us per frame | {' | '.join(names)} | relay - floor |" in table
        assert [split["name"] for split in saved["profile"]["splits"]] == names
        # CPU is read in 10 ms ticks: a smoke-sized round may show none for a proxy (nginx's
        # took under one tick in a CI run), but never a negative or undefined figure.
        assert all(0 <= split.us_per_frame < 1e6 for split in results["profile"]["splits"])
