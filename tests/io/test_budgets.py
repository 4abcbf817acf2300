"""Budgets end to end: refusal at the upgrade, the admin endpoint, Redis shared by two relays
(in process, and as two ``relay serve`` processes), Redis down with both failure policies, and
the session-hook API (``SessionUsage``) the session code calls."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import jwt
import pytest
from prometheus_client import CollectorRegistry

from relay.core.credentials import Authenticator, Identity
from relay.core.usage import Budget, PriceTable, Spend
from relay.io.budgets import BUDGETS, Budgets, MemoryStore, RedisStore, SessionUsage
from relay.observability.metrics import RelayMetrics
from relay.settings import Settings
from tests.conftest import TOKEN, RelayFactory, RelayHandle
from tests.support.recordings import load, recording_files
from tests.support.redis_server import RedisServer, running_redis
from tests.support.relay_process import TOKEN as PROCESS_TOKEN
from tests.support.relay_process import free_port, relay_process

OTHER_TOKEN = "relay-test-token-other-9876543210"
ADMIN_TOKEN = "relay-admin-token-abcdefghijklmnopq"
JWT_SECRET = "s" * 32
WS_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}
DAY_COST = {"scope": "identity", "period": "day", "max_cost_usd": 0.01}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


async def _refused(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
    """An upgrade attempt over plain HTTP, so a refusal's status, body and headers can be read."""
    async with aiohttp.ClientSession() as http, http.get(url, headers={**WS_HEADERS, **headers}) as resp:
        assert resp.status != 101, "the upgrade was admitted"
        return resp.status, await resp.json(), dict(resp.headers)


async def _admitted(url: str, headers: dict[str, str]) -> bool:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers, protocols=("realtime",)) as ws:
                await ws.close()
                return True
        except aiohttp.WSServerHandshakeError:
            return False


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _jwt(sub: str, tenant: str) -> dict[str, str]:
    now = int(time.time())
    return _bearer(
        jwt.encode({"sub": sub, "tenant": tenant, "iat": now, "exp": now + 600}, JWT_SECRET, "HS256")
    )


def _identity(settings: Settings, token: str) -> Identity:
    return Authenticator(settings).authenticate(token)


async def _spend(relay: RelayHandle, identity: Identity, amount: Spend) -> None:
    budgets = relay.app[BUDGETS]
    await budgets.spend(budgets.keys_for(identity), amount, time.time())


def _budgets(rules: list[dict[str, Any]], store: Any = None, **options: Any) -> Budgets:
    return Budgets(
        [Budget(**rule) for rule in rules],
        store or MemoryStore(),
        prices=PriceTable.with_overrides({}),
        metrics=RelayMetrics(CollectorRegistry()),
        **options,
    )


async def _settle(budgets: Budgets) -> None:
    """Wait for the spends and checks the hooks started in the background."""
    while budgets._tasks:
        await asyncio.gather(*budgets._tasks)


def _metric(budgets: Budgets, name: str, labels: dict[str, str]) -> float:
    return budgets.metrics.registry.get_sample_value(name, labels) or 0.0


def _response_done(total: int, event_id: str = "event_1") -> dict[str, Any]:
    usage = {
        "total_tokens": total,
        "input_tokens": total - 10,
        "output_tokens": 10,
        "input_token_details": {"text_tokens": total - 10, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 10, "audio_tokens": 0},
    }
    return {
        "type": "response.done",
        "event_id": event_id,
        "response": {"status": "completed", "usage": usage},
    }


# ---------------------------------------------------------------------------------- session hooks
async def test_session_usage_reads_a_recorded_session() -> None:
    """Every server event of a real session through ``on_server_event``: the models come from
    session.created/updated, usage from response.done and the transcription's duration."""
    budgets = _budgets([])
    usage = SessionUsage(budgets, Identity("alice", "acme"), "gpt-realtime")
    [path] = recording_files("openai-audio-in-server-vad")
    for interaction in load(path):
        if interaction["direction"] == "received":
            usage.on_server_event(interaction["data"]["type"], interaction["data"])
    await _settle(budgets)
    assert usage.transcription_model == "gpt-realtime-whisper"
    summary = usage.summary()
    assert summary["tokens"] == {"input_text": 14, "input_audio": 27, "output_text": 28, "output_audio": 136}
    assert summary["tokens_total"] == 205
    assert summary["transcription_s"] == 3.0
    cost = (14 * 4 + 27 * 32 + 28 * 16 + 136 * 64) / 1e6 + 3 / 60 * 0.017
    assert summary["cost_usd"] == pytest.approx(cost, abs=1e-6)
    labels = {"kind": "output_audio", "model": "gpt-realtime"}
    assert _metric(budgets, "relay_tokens_total", labels) == 136
    assert _metric(budgets, "relay_transcription_seconds_total", {"model": "gpt-realtime-whisper"}) == 3
    assert _metric(budgets, "relay_identity_tokens_total", {"identity": "other"}) == 205
    assert _metric(budgets, "relay_group_tokens_total", {"group": "other"}) == 205
    totals = await budgets.current(time.time())
    assert {(k.scope, k.period): v.tokens for k, v in totals.items()} == {
        (scope, period): 205 for scope in ("identity", "group") for period in ("minute", "hour", "day")
    }


async def test_listed_identities_and_groups_get_their_own_series() -> None:
    budgets = _budgets([], metric_identities=["jwt:acme/alice"], metric_groups=["acme"])
    usage = SessionUsage(budgets, Identity("alice", "acme"), "gpt-realtime-2025-08-28")
    usage.on_server_event("response.done", _response_done(50))
    await _settle(budgets)
    assert _metric(budgets, "relay_identity_tokens_total", {"identity": "jwt:acme/alice"}) == 50
    assert _metric(budgets, "relay_group_tokens_total", {"group": "acme"}) == 50
    assert _metric(budgets, "relay_tokens_total", {"kind": "input_text", "model": "gpt-realtime"}) == 40


async def test_response_create_is_refused_once_over_budget() -> None:
    budgets = _budgets([{"scope": "identity", "period": "day", "max_tokens": 300}])
    usage = SessionUsage(budgets, Identity("alice"), "gpt-realtime")
    create = {"type": "response.create", "event_id": "evt_client_1"}
    assert usage.refusal(create) is None
    assert usage.on_server_event("response.output_audio.delta", {}) is None  # not a usage event
    usage.on_server_event("response.done", _response_done(205))
    await _settle(budgets)
    assert usage.refusal(create) is None  # 205 of 300
    usage.on_server_event("response.done", _response_done(205, "event_2"))
    await _settle(budgets)
    refusal = usage.refusal(create)
    assert refusal is not None
    event = refusal.to_event()
    assert event["type"] == "error"
    assert event["error"]["type"] == "invalid_request_error"
    assert event["error"]["code"] == "budget_exceeded"
    assert event["error"]["event_id"] == "evt_client_1"
    assert "410 tokens of its 300 per day" in event["error"]["message"]
    labels = {"scope": "identity", "period": "day", "where": "response"}
    assert _metric(budgets, "relay_budget_refusals_total", labels) == 1
    assert usage.summary()["responses"] == 2  # usage kept counting; nothing was cut short


async def test_spending_elsewhere_is_noticed_within_the_recheck_interval() -> None:
    budgets = _budgets([{"scope": "identity", "period": "hour", "max_tokens": 100}], recheck_s=0.05)
    first = SessionUsage(budgets, Identity("alice"), "gpt-realtime")
    second = SessionUsage(budgets, Identity("alice"), "gpt-realtime")
    first.on_server_event("response.done", _response_done(150))
    await _settle(budgets)
    create = {"type": "response.create"}
    assert first.refusal(create) is not None
    assert second.refusal(create) is None  # its last view is the upgrade's
    await asyncio.sleep(0.06)
    # Due for a check: this process's counters answer it at once (a Redis store's check runs in
    # the background, and that response is answered from the old view).
    refusal = second.refusal(create)
    assert refusal is not None
    assert refusal.code == "budget_exceeded"
    assert not budgets._tasks  # nothing left running for in-memory counters


async def test_spending_on_another_replica_is_noticed_within_the_recheck_interval(
    redis_server: RedisServer,
) -> None:
    rules = [{"scope": "identity", "period": "hour", "max_tokens": 100}]
    budgets = _budgets(rules, RedisStore(redis_server.url, timeout_s=1.0), recheck_s=0.05)
    elsewhere = _budgets(rules, RedisStore(redis_server.url, timeout_s=1.0))  # another replica
    usage = SessionUsage(budgets, Identity("alice"), "gpt-realtime")
    create = {"type": "response.create"}
    await elsewhere.spend(elsewhere.keys_for(Identity("alice")), Spend(150, 0.0), time.time())
    assert usage.refusal(create) is None  # its last view is the upgrade's
    await asyncio.sleep(0.06)
    # Due for a check, which needs a round trip: it runs in the background, and this response
    # is answered from the old view rather than made to wait.
    assert usage.refusal(create) is None
    assert budgets._tasks
    await _settle(budgets)
    refusal = usage.refusal(create)
    assert refusal is not None
    assert refusal.code == "budget_exceeded"
    await budgets.aclose()
    await elsewhere.aclose()


@pytest.mark.parametrize("closed", [False, True])
async def test_session_hooks_with_redis_unreachable(closed: bool) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)  # nothing listens
    budgets = _budgets([{"scope": "identity", "period": "day", "max_tokens": 10}], store, fail_closed=closed)
    usage = SessionUsage(budgets, Identity("alice"), "gpt-realtime")
    usage.on_server_event("response.done", _response_done(50))
    await _settle(budgets)
    refusal = usage.refusal({"type": "response.create"})
    assert _metric(budgets, "relay_budget_store_failures_total", {"operation": "spend"}) == 1
    if closed:
        assert refusal is not None
        assert refusal.code == "budget_unavailable"
    else:
        assert refusal is None
    assert usage.summary()["tokens_total"] == 50  # the session's own totals do not need Redis
    await budgets.aclose()


# ---------------------------------------------------------------------------------- the upgrade
async def test_upgrade_over_budget_is_refused_with_the_limit_and_its_reset(start_relay: RelayFactory) -> None:
    relay = await start_relay(client_tokens=[TOKEN, OTHER_TOKEN], budgets=[DAY_COST])
    identity = _identity(relay.settings, TOKEN)
    await _spend(relay, identity, Spend(100, 0.004))
    assert await _admitted(relay.ws_url, relay.auth)  # under budget
    await _spend(relay, identity, Spend(100, 0.007))
    started = time.time()
    status, body, headers = await _refused(relay.ws_url, relay.auth)
    assert status == 429
    error = body["error"]
    assert error["code"] == "budget_exceeded"
    budget = error["budget"]
    assert budget["scope"] == "identity"
    assert budget["subject"] == identity.key
    assert budget["period"] == "day"
    assert budget["metric"] == "cost_usd"
    assert budget["limit"] == 0.01
    assert budget["used"] == pytest.approx(0.011)
    midnight = (int(started) // 86400 + 1) * 86400
    assert budget["resets_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(midnight))
    assert abs(int(headers["Retry-After"]) - (midnight - started)) <= 2
    assert budget["retry_after_s"] == int(headers["Retry-After"])
    assert "per day" in error["message"]
    assert (
        relay.metric(
            "relay_budget_refusals_total", {"scope": "identity", "period": "day", "where": "upgrade"}
        )
        == 1
    )
    assert relay.metric("relay_auth_rejections_total", {"reason": "budget_exceeded"}) == 1
    assert await _admitted(relay.ws_url, _bearer(OTHER_TOKEN))  # another client is not affected


async def test_a_group_budget_refuses_every_member(start_relay: RelayFactory) -> None:
    relay = await start_relay(
        client_tokens=[],
        jwt_secret=JWT_SECRET,
        budgets=[{"scope": "group", "group": "acme", "period": "hour", "max_tokens": 1000}],
    )
    await _spend(relay, Identity("alice", "acme"), Spend(1000, 0.0))
    status, body, _ = await _refused(relay.ws_url, _jwt("bob", "acme"))
    assert status == 429
    assert body["error"]["budget"]["scope"] == "group"
    assert body["error"]["budget"]["subject"] == "acme"
    assert body["error"]["budget"]["metric"] == "tokens"
    assert await _admitted(relay.ws_url, _jwt("carol", "globex"))


async def test_no_budgets_no_check(start_relay: RelayFactory) -> None:
    relay = await start_relay()
    await _spend(relay, _identity(relay.settings, TOKEN), Spend(10**9, 10**6))
    assert await _admitted(relay.ws_url, relay.auth)


# ---------------------------------------------------------------------------------- admin and prices
async def test_admin_usage_needs_its_own_token(start_relay: RelayFactory) -> None:
    disabled = await start_relay()
    async with aiohttp.ClientSession() as http:
        async with http.get(disabled.http_url + "/admin/usage", headers=disabled.auth) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "admin_disabled"

        relay = await start_relay(admin_token=ADMIN_TOKEN, jwt_secret=JWT_SECRET)
        await _spend(relay, _identity(relay.settings, TOKEN), Spend(300, 0.5))
        await _spend(relay, Identity("alice", "acme"), Spend(20, 0.25))
        url = relay.http_url + "/admin/usage"
        async with http.get(url) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "missing_credentials"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        for wrong in (TOKEN, ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1]):
            async with http.get(url, headers=_bearer(wrong)) as resp:
                assert resp.status == 403
                assert (await resp.json())["error"]["code"] == "invalid_admin_token"
        async with http.get(url, headers=_bearer(ADMIN_TOKEN)) as resp:
            assert resp.status == 200
            report = await resp.json()
    token_key = _identity(relay.settings, TOKEN).key
    assert report["store"] == "memory"
    for period in ("minute", "hour", "day"):
        assert report["periods"][period]["identities"] == {
            token_key: {"tokens": 300, "cost_usd": 0.5},
            "jwt:acme/alice": {"tokens": 20, "cost_usd": 0.25},
        }
        assert report["periods"][period]["groups"] == {"acme": {"tokens": 20, "cost_usd": 0.25}}
    assert report["periods"]["day"]["resets_at"].endswith("T00:00:00Z")
    assert ADMIN_TOKEN not in json.dumps(report)


def test_the_admin_token_is_never_a_client_token() -> None:
    with pytest.raises(ValueError, match="admin_token"):
        Settings(client_tokens=[TOKEN], admin_token=TOKEN)


async def test_prices_are_public(start_relay: RelayFactory) -> None:
    relay = await start_relay(prices={"my-deployment": {"input_audio": 1.0}})
    async with aiohttp.ClientSession() as http, http.get(relay.http_url + "/v1/relay/prices") as resp:
        assert resp.status == 200
        assert "Content-Security-Policy" in resp.headers
        prices = await resp.json()
    assert prices["models"]["gpt-realtime"]["output_audio"] == 64.0
    assert prices["models"]["my-deployment"]["input_audio"] == 1.0
    assert prices["default"]["input_audio"] == 32.0
    assert prices["as_of"] == "2026-12-02"


# ---------------------------------------------------------------------------------- Redis
@pytest.mark.system
async def test_two_relays_share_budgets_through_redis(
    start_relay: RelayFactory, redis_server: RedisServer
) -> None:
    options = {"redis_url": redis_server.url, "budgets": [DAY_COST], "admin_token": ADMIN_TOKEN}
    first = await start_relay(**options)
    second = await start_relay(**options)
    identity = _identity(first.settings, TOKEN)
    await _spend(first, identity, Spend(100, 0.006))
    assert await _admitted(second.ws_url, second.auth)
    await _spend(second, identity, Spend(100, 0.006))  # 0.012 together: over, on both
    for relay in (first, second):
        status, body, _ = await _refused(relay.ws_url, relay.auth)
        assert status == 429
        assert body["error"]["budget"]["used"] == pytest.approx(0.012)
    async with (
        aiohttp.ClientSession() as http,
        http.get(first.http_url + "/admin/usage", headers=_bearer(ADMIN_TOKEN)) as resp,
    ):
        report = await resp.json()
    assert report["store"] == "redis"
    assert report["periods"]["hour"]["identities"][identity.key] == {"tokens": 200, "cost_usd": 0.012}


@pytest.mark.system
async def test_two_relay_processes_share_budgets_set_in_the_environment(redis_server: RedisServer) -> None:
    env = {
        "RELAY_REDIS_URL": redis_server.url,
        "RELAY_BUDGETS": json.dumps([{"scope": "identity", "period": "hour", "max_tokens": 1000}]),
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    identity = _identity(Settings(client_tokens=[PROCESS_TOKEN]), PROCESS_TOKEN)
    spender = _budgets([], RedisStore(redis_server.url, timeout_s=1.0))
    async with relay_process(**env) as a, relay_process(**env) as b:
        assert await _admitted(a.ws_url, a.auth)
        await spender.spend(spender.keys_for(identity), Spend(600, 0.0), time.time())
        assert await _admitted(b.ws_url, b.auth)
        await spender.spend(spender.keys_for(identity), Spend(600, 0.0), time.time())
        async with aiohttp.ClientSession() as http:
            for proc in (a, b):
                status, body, headers = await _refused(proc.ws_url, proc.auth)
                assert status == 429
                assert body["error"]["budget"]["used"] == 1200
                assert int(headers["Retry-After"]) <= 3600
                admin = f"http://127.0.0.1:{proc.port}/admin/usage"
                async with http.get(admin, headers=_bearer(ADMIN_TOKEN)) as resp:
                    report = await resp.json()
                assert report["periods"]["day"]["identities"][identity.key]["tokens"] == 1200
    await spender.aclose()


@pytest.mark.system
async def test_redis_down_fail_open_admits_and_raises_the_alert_metric(
    start_relay: RelayFactory, redis_server: RedisServer
) -> None:
    relay = await start_relay(redis_url=redis_server.url, budgets=[DAY_COST], budget_redis_failure="open")
    await _spend(relay, _identity(relay.settings, TOKEN), Spend(1, 0.02))
    assert (await _refused(relay.ws_url, relay.auth))[0] == 429
    redis_server.stop()
    started = time.perf_counter()
    assert await _admitted(relay.ws_url, relay.auth)  # allowed while Redis is down
    assert time.perf_counter() - started < 2.0
    assert relay.metric("relay_budget_store_failures_total", {"operation": "check"}) == 1
    redis_server.start()  # without persistence: the counters are gone, as after a crash
    await asyncio.sleep(1.1)  # the store is retried a second after a failure
    assert await _admitted(relay.ws_url, relay.auth)
    assert relay.metric("relay_budget_store_failures_total", {"operation": "check"}) == 1


@pytest.mark.system
async def test_redis_down_fail_closed_refuses_until_it_answers(
    start_relay: RelayFactory, redis_server: RedisServer
) -> None:
    relay = await start_relay(redis_url=redis_server.url, budgets=[DAY_COST], budget_redis_failure="closed")
    assert await _admitted(relay.ws_url, relay.auth)
    redis_server.stop()
    for _ in range(2):  # the second is refused without trying Redis (within a second)
        status, body, headers = await _refused(relay.ws_url, relay.auth)
        assert status == 503
        assert body["error"]["code"] == "budget_unavailable"
        assert headers["Retry-After"] == "5"
    assert (
        relay.metric("relay_budget_refusals_total", {"scope": "store", "period": "none", "where": "upgrade"})
        == 2
    )
    assert relay.metric("relay_budget_store_failures_total", {"operation": "check"}) == 2
    async with (
        aiohttp.ClientSession() as http,
        http.get(relay.http_url + "/v1/relay/prices") as resp,
    ):
        assert resp.status == 200  # nothing else depends on Redis
    redis_server.start()
    await asyncio.sleep(1.1)
    assert await _admitted(relay.ws_url, relay.auth)
