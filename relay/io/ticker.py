"""One clock for every conversation's housekeeping (hold timeouts, keepalive, stuck peers, the
resume grace, when to rotate).

A timer per conversation woke the process hundreds of times a second at a few hundred sessions,
each wake-up a task step, a future, a timer and a getpid() (asyncio's loop lookup). One task now
wakes ``SLOTS`` times per period, and each wake-up runs the checks of one slot's conversations: a
tenth of them, so no tick holds up every session's frames at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from relay.observability.logging import get_logger

SLOTS = 10
_log = get_logger()


class Member(Protocol):
    def housekeeping(self, now: float) -> None: ...


class Ticker:
    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s = period_s
        self._slots: list[dict[Member, None]] = [{} for _ in range(SLOTS)]  # ordered sets
        self._slot_of: dict[Member, int] = {}
        self._next_slot = 0

    def join(self, member: Member) -> None:
        slot, self._next_slot = self._next_slot, (self._next_slot + 1) % SLOTS
        self._slots[slot][member] = None
        self._slot_of[member] = slot

    def leave(self, member: Member) -> None:
        slot = self._slot_of.pop(member, None)
        if slot is not None:
            del self._slots[slot][member]

    def __len__(self) -> int:
        return len(self._slot_of)

    def tick(self, slot: int, now: float) -> None:
        """One wake-up: one slot's checks. Members do not raise: a conversation ends itself on
        its own failures."""
        for member in list(self._slots[slot]):
            member.housekeeping(now)

    async def run(self) -> None:
        """Tick until cancelled. A late loop skips the wake-ups it missed rather than bursting."""
        loop = asyncio.get_running_loop()
        step = self.period_s / SLOTS
        due = loop.time()
        slot = 0
        while True:
            due = max(due + step, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                self.tick(slot, time.monotonic())
            except Exception:  # one member's bug must not stop every other conversation's clock
                _log.exception("housekeeping_failed")
            slot = (slot + 1) % SLOTS
