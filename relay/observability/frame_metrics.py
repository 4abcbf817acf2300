"""The per-frame metrics: frames, bytes and relay-added latency, counted as plain integers.

Every forwarded frame updates them, so they cannot afford prometheus_client's counters (a lock
and several checks per ``inc``, ~1 us each; three of them per frame were measurable in the
benchmark's profile). The relay is single-threaded, so plain integers are exact; they are turned
into metric families only when ``/metrics`` is scraped, with the names, types and labels the
dashboards and alerts use: ``relay_frames_total``, ``relay_bytes_total`` and the histogram
``relay_added_latency_seconds``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.core.protocol import event_type_label

DIRECTIONS = ("client_to_upstream", "upstream_to_client")
_MAX_CACHED_TYPES = 256


class FrameMetrics(Collector):
    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = list(buckets)
        # Per direction and label: [frames, bytes]; raw event types map onto their label's cell.
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._cells: dict[str, dict[str, list[int]]] = {d: {} for d in DIRECTIONS}
        # Per direction: one count per bucket (the last is +Inf), and the observations' sum (a
        # list of one: the lanes keep a reference, relay.io.lanes).
        self._latency = {d: [0] * (len(self._bounds) + 1) for d in DIRECTIONS}
        self._latency_sum = {d: [0.0] for d in DIRECTIONS}

    def frame(self, direction: str, event_type: str, nbytes: int) -> None:
        """One forwarded frame; types outside the protocol's lists are counted as ``other``."""
        cell = self._cells[direction].get(event_type)
        if cell is None:
            cell = self._cell(direction, event_type)
        cell[0] += 1
        cell[1] += nbytes

    def cell(self, direction: str, event_type: str) -> list[int]:
        """``[frames, bytes]`` of one event type, for a caller that counts the commonest frames
        itself (the append, the audio delta): two integer additions instead of a call."""
        return self._cells[direction].get(event_type) or self._cell(direction, event_type)

    def _cell(self, direction: str, event_type: str) -> list[int]:
        label = event_type_label(event_type)
        cell = self._counts.setdefault((direction, label), [0, 0])
        cells = self._cells[direction]
        if len(cells) < _MAX_CACHED_TYPES:  # made-up types must not grow this without bound
            cells[event_type] = cell
        return cell

    def latency(self, direction: str, seconds: float) -> None:
        """Time one frame spent inside the relay; buckets are upper bounds, inclusive ("le")."""
        self._latency[direction][bisect_left(self._bounds, seconds)] += 1
        self._latency_sum[direction][0] += seconds

    def latency_cells(self, direction: str) -> tuple[list[float], list[int], list[float]]:
        """The buckets' bounds, their counts and the sum, for a lane that counts itself."""
        return self._bounds, self._latency[direction], self._latency_sum[direction]

    def collect(self) -> Iterator[Metric]:
        frames = CounterMetricFamily(
            "relay_frames", "Frames forwarded by direction and event type.", labels=["direction", "type"]
        )
        sizes = CounterMetricFamily(
            "relay_bytes", "Bytes forwarded by direction and event type.", labels=["direction", "type"]
        )
        for (direction, event_type), (count, nbytes) in self._counts.items():
            frames.add_metric([direction, event_type], count)
            sizes.add_metric([direction, event_type], nbytes)
        latency = HistogramMetricFamily(
            "relay_added_latency_seconds",
            "Time a frame spends inside the relay, by direction.",
            labels=["direction"],
        )
        for direction in DIRECTIONS:
            latency.add_metric([direction], self._buckets(direction), self._latency_sum[direction][0])
        yield from (frames, sizes, latency)

    def _buckets(self, direction: str) -> list[tuple[str, float]]:
        cumulative, buckets = 0, []
        counts = self._latency[direction]
        for bound, count in zip([*map(_le, self._bounds), "+Inf"], counts, strict=True):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        return buckets


def _le(bound: float) -> str:
    return repr(float(bound))  # prometheus_client's own spelling: 5e-05, 0.0001, 1.0
