"""The resume benchmark's harness, smoke-sized (bench/resume.py): it measures what it says.

Correctness of the harness only; its timings belong in the report, not in assertions.
"""

from __future__ import annotations

import asyncio

from bench.report import resume_lines
from bench.resume import same_process, takeover
from tests.support.redis_server import require_redis


def test_the_resume_benchmark_counts_every_event_and_reports() -> None:
    require_redis()  # the takeover and drain rows need a real redis-server

    async def run() -> dict[str, dict[str, object]]:
        return {
            "same_process": await same_process(1, 1.0, speed=8.0),
            "takeover": await takeover(1, 1.0, speed=8.0),
            "drain": {"skipped": "the rolling deploy of tests/io/test_shared_resume.py covers it"},
            "redis_cost": {"skipped": "not in the smoke run"},
        }

    results = asyncio.run(run())
    for way in ("same_process", "takeover"):
        row = results[way]
        assert row["conversations"] == 1
        assert row["lost"] == row["duplicated"] == 0
        assert isinstance(row["first_event_max_ms"], float)
    assert results["same_process"]["completed"] == 1  # nothing is cut on its own process
    text = "\n".join(resume_lines(results))
    assert "Resume on another process (takeover through Redis)" in text
    assert "Drain: skipped" in text
