"""The one housekeeping clock every conversation of a process shares (relay.io.ticker)."""

from __future__ import annotations

import asyncio

from relay.io.ticker import SLOTS, Ticker


class Member:
    def __init__(self, fails: bool = False) -> None:
        self.housekept: list[float] = []
        self.fails = fails

    def housekeeping(self, now: float) -> None:
        self.housekept.append(now)
        if self.fails:
            raise RuntimeError("a bug in one conversation's checks")


def test_each_member_is_housekept_once_a_period_in_a_slot_of_its_own() -> None:
    ticker = Ticker(period_s=1.0)
    members = [Member() for _ in range(SLOTS * 3)]
    for member in members:
        ticker.join(member)
    for slot in range(SLOTS):
        ticker.tick(slot, float(slot))
        # Each wake-up runs the full checks of a tenth of the members, never all at once.
        assert sum(len(m.housekept) for m in members) == 3 * (slot + 1)
    assert [len(m.housekept) for m in members] == [1] * len(members)


def test_a_member_that_left_is_not_ticked() -> None:
    ticker = Ticker()
    gone, staying = Member(), Member()
    ticker.join(gone)
    ticker.join(staying)
    ticker.leave(gone)
    ticker.leave(gone)  # twice: an ended conversation leaves once, but must not break the clock
    for slot in range(SLOTS):
        ticker.tick(slot, 0.0)
    assert len(gone.housekept) == 0
    assert len(staying.housekept) == 1
    assert len(ticker) == 1


async def test_the_clock_runs_on_after_a_member_fails() -> None:
    ticker = Ticker(period_s=0.05)
    broken, healthy = Member(fails=True), Member()
    ticker.join(broken)
    ticker.join(healthy)
    running = asyncio.create_task(ticker.run())
    try:
        # The broken member raised at each of its wake-ups; the clock went on for both.
        async with asyncio.timeout(10):
            while len(healthy.housekept) < 3 or len(broken.housekept) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert not running.done()
    finally:
        running.cancel()
