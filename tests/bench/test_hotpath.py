"""The no-socket hot-path harness forwards every frame it is fed (timings are not asserted)."""

from __future__ import annotations

from bench.hotpath import measure


async def test_every_fed_frame_is_forwarded_once() -> None:
    result = await measure(frames=100, interleaved=3)
    assert result["forwarded"] == result["fed"]
    assert result["fed"] == (700, 700)  # 7 batches of 100, each direction
    assert result["c2u_us"] > 0
    assert result["u2c_us"] > 0
    assert result["interleaved"] == 3
    assert result["c2u_interleaved_us"] > 0
    assert result["u2c_interleaved_us"] > 0
