"""One ``/metrics`` for a server of several worker processes: their expositions merged, sans I/O.

Each worker keeps its metrics in its own memory (the per-frame counters are plain integers:
``relay.observability.frame_metrics``), so prometheus-client's multiprocess mode, which writes
every increment to a shared file, would put a file write on the forwarding path. Instead the
worker that answers a scrape asks its siblings for their expositions and merges them here:
counters, histograms and most gauges (sessions, held events) add up; the few gauges that
describe a state rather than an amount take the worst worker's value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

# Gauges that are not amounts: the server is as late, as overloaded, as cut off as its worst worker.
_WORST: dict[str, Callable[[Iterable[float]], float]] = {
    "relay_event_loop_lag_seconds": max,
    "relay_overloaded": max,
    "relay_cpu_share": max,
    "relay_session_store_up": min,
}


def merge_expositions(texts: Iterable[str], *, workers_label: str = "relay_workers") -> bytes:
    """The expositions of every worker as one (Prometheus text format)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
    reporting = 0
    for text in texts:
        reporting += 1
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples.setdefault(key, []).append(sample.value)
    for name, family in families.items():
        rule = _rule(name, family.type)
        for (sample_name, labels), found in values[name].items():
            value = min(found) if sample_name.endswith("_created") else rule(found)
            family.add_sample(sample_name, dict(labels), value)
    workers = Metric(workers_label, "Worker processes whose metrics this scrape merged.", "gauge")
    workers.add_sample(workers_label, {}, float(reporting))
    families[workers_label] = workers
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


def _rule(name: str, kind: str) -> Callable[[Iterable[float]], float]:
    if kind == "info" or name.endswith("_info"):  # the text format shows Info metrics as gauges
        return max
    return _WORST.get(name, sum)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
