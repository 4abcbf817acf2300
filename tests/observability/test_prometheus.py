"""A real Prometheus scrapes a running relay; the values come back through its query API."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from tests.support.relay_process import free_port, relay_process
from tests.support.system import require_binary


async def _query(port: int, expr: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}) as resp,
    ):
        body = await resp.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def _value(port: int, expr: str) -> float:
    result = await _query(port, expr)
    return float(result[0]["value"][1]) if result else 0.0


@pytest.mark.slow
async def test_prometheus_reads_the_relay_metrics(tmp_path: Path) -> None:
    prometheus = require_binary("prometheus", package="prometheus")
    async with relay_process(
        RELAY_ROTATE_AFTER_S="1", RELAY_ROTATE_JITTER_S="0", RELAY_SIMULATOR_SPEED="50"
    ) as relay:
        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        target = f"127.0.0.1:{relay.port}"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            f"scrape_configs: [{{job_name: relay, static_configs: [{{targets: ['{target}']}}]}}]\n"
        )
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
                await ws.recv()
                await ws.send('{"type":"session.update","session":{"type":"realtime","bogus":1}}')
                error = orjson.loads(await ws.recv())
                assert error["error"]["code"] == "unknown_parameter"
                await asyncio.sleep(2.5)  # idle: the supervisor rotates the upstream
            expectations = {
                'relay_validation_rejections_total{code="unknown_parameter"}': 1.0,
                'relay_upstream_replacements_total{cause="rotation"}': 1.0,
                'relay_sessions_total{outcome="client_closed"}': 1.0,
                'relay_upstream_connects_total{provider="simulator",result="ok"}': 2.0,
                "relay_build_info": 1.0,
            }
            for _ in range(60):
                got = {expr: await _value(prom_port, expr) for expr in expectations}
                if all(got[e] >= v for e, v in expectations.items()):
                    break
                await asyncio.sleep(0.5)
            for expr, minimum in expectations.items():
                assert got[expr] >= minimum, (expr, got)
            latency = await _query(prom_port, "relay_added_latency_seconds_count")
            assert {r["metric"]["direction"] for r in latency} >= {"upstream_to_client"}
        finally:
            proc.terminate()
            proc.wait(10)
