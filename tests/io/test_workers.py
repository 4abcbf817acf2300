"""``relay serve --workers N``: several processes on one port behave as one server.

Real ``relay serve`` processes: the parent and its workers (SO_REUSEPORT), clients connecting
to the one port. Caps hold across workers, ``/metrics`` reports the whole server whichever worker
answers, a worker that dies is replaced and its slots freed, and with Redis a client resumes on
whichever worker its reconnection reaches.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.support.conversation import RecordingClient, text_item
from tests.support.redis_server import RedisServer, running_redis
from tests.support.relay_process import TOKEN, RelayProcess, relay_process

WORKERS = 2
CAP = 12


def _value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items())
    )


async def _get(url: str, connector: aiohttp.BaseConnector | None = None) -> str:
    async with aiohttp.ClientSession(connector=connector) as http, http.get(url) as response:
        return await response.text()


def _workers(relay: RelayProcess) -> list[psutil.Process]:
    return psutil.Process(relay.proc.pid).children()


def _worker_dir(relay: RelayProcess) -> Path:
    return Path(_workers(relay)[0].environ()["RELAY_WORKER_DIR"])


async def _per_worker(relay: RelayProcess, name: str) -> list[float]:
    directory = _worker_dir(relay)
    values = []
    for index in range(WORKERS):
        connector = aiohttp.UnixConnector(path=str(directory / f"worker-{index}.sock"))
        values.append(_value(await _get("http://worker/metrics", connector), name))
    return values


async def _connect(relay: RelayProcess) -> RecordingClient:
    client = await RecordingClient.connect(relay.ws_url + "&relay_resume=1", TOKEN)
    await client.wait_for("session.created")
    return client


async def _status(relay: RelayProcess) -> int:
    try:
        client = await _connect(relay)
    except websockets.InvalidStatus as exc:
        return exc.response.status_code
    await client.close()
    return 101


async def _until_admitted(relay: RelayProcess, within_s: float = 5.0) -> int:
    """The first status that is not 429 within ``within_s`` (or the last 429)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while (status := await _status(relay)) == 429 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return status


@pytest.fixture
async def server() -> AsyncIterator[RelayProcess]:
    async with relay_process(
        RELAY_WORKERS=str(WORKERS),
        RELAY_MAX_SESSIONS_PER_TOKEN=str(CAP),
        RELAY_DRAIN_GRACE_S="1",
        RELAY_OVERLOAD_LAG_MS="0",
        RELAY_LOG_LEVEL="WARNING",
    ) as relay:
        await _until_all_workers_report(relay)
        yield relay


async def _until_all_workers_report(relay: RelayProcess) -> None:
    async with asyncio.timeout(30):
        while _value(await _get(f"http://127.0.0.1:{relay.port}/metrics"), "relay_workers") < WORKERS:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_caps_and_metrics_hold_across_workers_and_a_dead_one_is_replaced(server: RelayProcess) -> None:
    clients = [await _connect(server) for _ in range(CAP)]
    spread = await _per_worker(server, "relay_sessions_active")
    assert sum(spread) == CAP
    assert all(count > 0 for count in spread), f"SO_REUSEPORT left a worker idle: {spread}"
    # The cap is the server's, not each worker's: one more is refused, whichever worker gets it.
    for _ in range(4):
        assert await _status(server) == 429
    for _ in range(3):  # any worker answering the scrape reports the whole server
        text = await _get(f"http://127.0.0.1:{server.port}/metrics")
        assert _value(text, "relay_sessions_active") == CAP
        assert _value(text, "relay_workers") == WORKERS
        assert _value(text, "relay_auth_rejections_total") == 4
    await clients.pop().close()
    # A slot freed on any worker is free for all, once its release has reached the parent (a
    # line on a Unix socket after the session ends: moments after the client's close returns).
    assert await _until_admitted(server) == 101
    # A worker dies: its clients lose their connection, a new worker starts, its slots are free.
    victim = _workers(server)[0]
    victim.send_signal(signal.SIGKILL)
    async with asyncio.timeout(20):
        while victim.pid in {p.pid for p in _workers(server)} or len(_workers(server)) < WORKERS:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await _until_all_workers_report(server)
    lost = [c for c in clients if c._reader.done()]
    assert lost, "no client was on the killed worker"
    # Exactly the dead worker's slots (and the one closed above) are free again: that many fit.
    refill = [await _connect(server) for _ in range(len(lost) + 1)]
    assert await _status(server) == 429
    await asyncio.gather(*(client.close() for client in [*clients, *refill] if client not in lost))


@pytest.mark.timeout(60)
async def test_sigterm_stops_every_worker_and_the_parent_cleanly(server: RelayProcess) -> None:
    client = await _connect(server)
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(client._reader, 20)
    assert client.ws.close_code == 1012  # service restart: the SDKs reconnect elsewhere
    assert await asyncio.to_thread(server.proc.wait, 20) == 0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.mark.timeout(120)
async def test_with_redis_a_client_resumes_on_whichever_worker_it_reaches(redis_server: RedisServer) -> None:
    """At its cap, too: a client with as many conversations as its cap allows comes back to each
    on whichever worker it reaches; one taken over from the other worker is counted there until
    its owner lets it go, and that must not refuse the client its own conversation."""
    async with relay_process(
        RELAY_WORKERS=str(WORKERS),
        RELAY_MAX_SESSIONS_PER_TOKEN="6",
        RELAY_REDIS_URL=redis_server.url,
        RELAY_OVERLOAD_LAG_MS="0",
        RELAY_LOG_LEVEL="WARNING",
        RELAY_SIMULATOR_SPEED="20",
    ) as relay:
        await _until_all_workers_report(relay)
        clients = [await _connect(relay) for _ in range(6)]
        for client in clients:
            await client.send(text_item("remember the word banana"))
            await client.send({"type": "response.create"})
        await asyncio.gather(*(client.wait_for("response.done", timeout=30) for client in clients))
        for client in clients:
            client.ws.transport.abort()  # the network goes; the conversation waits
        await asyncio.sleep(0.6)
        resumed = []
        for client in clients:
            token = str(
                next(e for e in reversed(client.events) if e["type"] == "relay.session_resumable")[
                    "resume_token"
                ]
            )
            headers = {
                **relay.auth,
                "X-Relay-Resume-Token": token,
                "X-Relay-Last-Event-Id": client.events[-1]["event_id"],
            }
            ws = await websockets.connect(relay.ws_url, additional_headers=headers, max_size=None)
            resumed.append(RecordingClient(ws))
        for client in resumed:
            await client.send(text_item("and now?"))
            await client.send({"type": "response.create"})
        dones = await asyncio.gather(*(client.wait_for("response.done", timeout=30) for client in resumed))
        assert all(done["response"]["status"] == "completed" for done in dones)
        for before, after in zip(clients, resumed, strict=True):
            assert after.relay_session == before.relay_session
            assert "session.created" not in after.types()
        text = await _get(f"http://127.0.0.1:{relay.port}/metrics")
        # Each resume found its last event, on whichever worker it reached (taken over or not).
        assert _value(text, "relay_resumes_total", {"result": "ok"}) == len(clients)
        await asyncio.gather(*(client.close() for client in resumed))
