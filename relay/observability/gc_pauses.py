"""Python's cyclic garbage collector as a real-time relay meets it: a stop of the event loop.

A collection walks every tracked object of its generations with the loop stopped, so every
session on the process waits it out. Start-up leaves ~80,000 objects (modules, schemas, the app)
that full collections would walk for nothing, so they are frozen once the relay serves
(``gc.freeze``, as large Python services do). Sessions then pile up their own: connections,
state, and the conversation's mirror (every item a few dicts and lists, up to
``replay_max_items`` per session). A full collection walked them all: 66-113 ms at ~370 voice
sessions (docs/benchmark.md, fourteenth stop), and it grows with every turn of every long
conversation. So every ``gc_freeze_every_s`` the young generations are collected and what
survives is frozen too: a full collection then walks only what is newer than that.

A frozen object is still freed by reference counting (an ended session is: tests/io/
test_session_freed.py); only cyclic garbage among frozen objects would wait, and the relay makes
none (``relay_gc_collected_objects_total`` counts what collections do find). Whenever the
process has no session, everything is unfrozen and collected once, which no one waits for.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from time import perf_counter
from typing import Any

from relay.observability.metrics import RelayMetrics


class GcPauses:
    """Times each collection, by generation; ``install`` once per process."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self._pauses = [metrics.gc_pause_seconds.labels(str(g)) for g in range(3)]
        self._collected = [metrics.gc_collected_objects_total.labels(str(g)) for g in range(3)]
        self._frozen = metrics.gc_frozen_objects
        self._started = 0.0
        self._swept = True  # nothing frozen since the last sweep (start-up's sweep is its own)

    def install(self) -> None:
        gc.callbacks.append(self._on_collection)

    def uninstall(self) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)

    def freeze_start_up(self) -> None:
        """Collect once, then keep everything alive now out of later collections."""
        gc.collect()
        gc.freeze()
        self._frozen.set(gc.get_freeze_count())

    def step(self, sessions: int) -> None:
        """One period: freeze the survivors of the young generations, or with no session to
        hold up, unfreeze everything and collect it once (and count what stays frozen)."""
        if sessions == 0:
            if not self._swept:
                gc.unfreeze()
                gc.collect()
                gc.freeze()
                self._swept = True
                self._frozen.set(gc.get_freeze_count())
        else:
            gc.collect(1)  # young cycles go now, not frozen with the survivors
            gc.freeze()
            self._swept = False
            # Not counted here: get_freeze_count walks every frozen object, ~20 ms at 370
            # sessions with the loop stopped, the very pause this avoids.

    async def run(self, every_s: float, sessions: Callable[[], int]) -> None:
        """:meth:`step` every ``every_s`` until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            self.step(sessions())

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = perf_counter()
        else:
            self._pauses[info["generation"]].observe(perf_counter() - self._started)
            if info["collected"]:
                self._collected[info["generation"]].inc(info["collected"])
