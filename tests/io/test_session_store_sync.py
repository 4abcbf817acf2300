"""The store's sync writes every changed conversation, in slices that let the event loop run.

Real conversations (``Conversation`` on the hot-path harness's null transports, with turns of the
simulator's events in their mirrors) and a real ``redis-server``.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from bench.hotpath import HotPath, open_hot_path, turn_frames
from relay.io import session_store
from relay.io.session_store import SessionStore
from relay.observability.metrics import RelayMetrics
from tests.support.redis_server import RedisServer, running_redis


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


async def _conversation(http: aiohttp.ClientSession, index: int, turns: int) -> HotPath:
    path = await open_hot_path(http)
    path.session.id = f"relay_sync_{index}"
    path.session.credential.digest = bytes([index]) * 32  # as after its first upgrade
    for turn in range(turns):
        path.turn(turn_frames(turn))
    return path


@pytest.mark.parametrize("slice_s", [0.0, 10.0])  # a slice per conversation; all in one
async def test_every_changed_conversation_is_written_whatever_the_slices(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, slice_s: float
) -> None:
    monkeypatch.setattr(session_store, "_WRITE_SLICE_S", slice_s)
    metrics = RelayMetrics(CollectorRegistry())
    store = SessionStore(redis_server.url, timeout_s=2, lease_s=10, ttl_s=60, metrics=metrics)
    redis = Redis.from_url(redis_server.url)
    try:
        async with aiohttp.ClientSession() as http:
            paths = [await _conversation(http, index, turns=index + 1) for index in range(12)]
            for path in paths:
                store.keep(path.session)
            await store.sync()  # registers and writes each one
            for index, path in enumerate(paths):  # another turn each: changed again
                path.turn(turn_frames(100 + index))
            await store.sync()
        for index in range(12):
            raw = await redis.get(f"relay:session:relay_sync_{index}")
            assert raw is not None, f"conversation {index} was not written"
            snapshot = orjson.loads(raw)
            assert len(snapshot["items"]) == 2 * (index + 2)  # its turns, the last included
            assert snapshot["digest"] == (bytes([index]) * 32).hex()
    finally:
        await redis.aclose()
        await store.close()
