"""The garbage collector's pauses: start-up's objects frozen out of them, every pause timed."""

from __future__ import annotations

import base64
import gc

import aiohttp
import websockets
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from relay.observability.gc_pauses import GcPauses
from relay.observability.metrics import RelayMetrics
from tests.support.relay_process import relay_process


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_collection_is_timed_by_generation() -> None:
    metrics = RelayMetrics(CollectorRegistry())
    pauses = GcPauses(metrics)
    pauses.install()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.uninstall()
    samples = _samples(metrics.render()[0].decode())
    count = "relay_gc_pause_seconds_count"
    assert samples[(count, (("generation", "0"),))] >= 1  # automatic ones may come on top
    assert samples[(count, (("generation", "2"),))] >= 1
    assert samples[("relay_gc_pause_seconds_sum", (("generation", "2"),))] > 0
    gc.collect(2)  # after uninstall: not counted
    assert _samples(metrics.render()[0].decode()) == samples


async def test_a_serving_relay_has_frozen_its_start_up_and_reports_its_pauses() -> None:
    audio = base64.b64encode(bytes(960)).decode()
    append = f'{{"type":"input_audio_buffer.append","audio":"{audio}"}}'
    async with relay_process() as relay:
        async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
            await ws.recv()
            for _ in range(1500):  # each append parses into a dict: young collections follow
                await ws.send(append)
        url = f"http://127.0.0.1:{relay.port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            samples = _samples(await resp.text())
    # Modules, schemas and the app: tens of thousands of objects no collection walks again.
    assert samples[("relay_gc_frozen_objects", ())] > 10_000
    assert samples[("relay_gc_pause_seconds_count", (("generation", "0"),))] > 0
