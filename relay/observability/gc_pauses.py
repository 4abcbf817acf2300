"""Python's cyclic garbage collector as a real-time relay meets it: a stop of the event loop.

A collection walks every tracked object of its generations with the loop stopped, so every
session on the process waits it out (~1 us per object here). Start-up leaves ~80,000 objects
(modules, schemas, the app) that later full collections would walk for nothing: 70-120 ms at
100 sessions (docs/benchmark.md). So they are frozen once the relay serves (``gc.freeze``, as
large Python services do), and every pause is timed into ``relay_gc_pause_seconds``.
"""

from __future__ import annotations

import gc
from time import perf_counter
from typing import Any

from relay.observability.metrics import RelayMetrics


class GcPauses:
    """Times each collection, by generation; ``install`` once per process."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self._pauses = [metrics.gc_pause_seconds.labels(str(g)) for g in range(3)]
        self._frozen = metrics.gc_frozen_objects
        self._started = 0.0

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

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = perf_counter()
        else:
            self._pauses[info["generation"]].observe(perf_counter() - self._started)
