"""Usage over HTTP: ``GET /admin/usage`` for the operator, ``GET /v1/relay/prices`` for the console.

``/admin/usage`` takes its own credential, ``RELAY_ADMIN_TOKEN`` as a bearer token, never a
client token (settings refuse one that is also a client token). It is compared in constant time,
and failures count against the same per-address budget as failed client authentications, so the
admin token cannot be guessed faster than a client token. Unset, the endpoint is refused.
The price list holds no secret: the console computes a session's cost from it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from aiohttp import hdrs, web

from relay.core.usage import PERIODS, iso, window
from relay.io.budgets import BUDGETS
from relay.io.handler import AUTH_FAILURES, Rejection, client_peer, log_rejection
from relay.io.redis_client import StoreUnavailable
from relay.observability.logging import register_secret
from relay.settings import Settings

ADMIN_TOKEN_DIGEST: web.AppKey[bytes] = web.AppKey("admin_token_digest", bytes)


def add_usage_routes(app: web.Application, settings: Settings) -> None:
    if settings.admin_token is not None:
        register_secret(settings.admin_token.get_secret_value())
        # Digests of equal length: compare_digest's time then says nothing about the token's length.
        app[ADMIN_TOKEN_DIGEST] = _digest(settings.admin_token.get_secret_value())
    app.router.add_get("/admin/usage", admin_usage)
    app.router.add_get("/v1/relay/prices", prices)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def admin_refusal(request: web.Request) -> Rejection | None:
    """None when the request carries the admin token; else why not (401, 403 or 429)."""
    expected = request.app.get(ADMIN_TOKEN_DIGEST)
    if expected is None:
        return Rejection(
            403, "admin_disabled", "the admin endpoints are off: set RELAY_ADMIN_TOKEN to use them"
        )
    failures = request.app[AUTH_FAILURES]
    peer = client_peer(request)
    if failures.blocked(peer):
        return Rejection(
            429, "auth_rate_limited", "too many failed authentications from this address", retry_after_s=1
        )
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Rejection(
            401, "missing_credentials", "send the admin token as 'Authorization: Bearer <token>'"
        )
    if not hmac.compare_digest(_digest(token.strip()), expected):
        failures.failed(peer)
        return Rejection(403, "invalid_admin_token", "invalid admin token")
    return None


async def admin_usage(request: web.Request) -> web.Response:
    """Totals per identity and per group in the current minute, hour and day."""
    refusal = admin_refusal(request)
    if refusal is not None:
        log_rejection(request, refusal)
        response = refusal.response()
        if refusal.status == 401:
            response.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="relay-admin"'
        return response
    budgets = request.app[BUDGETS]
    now = time.time()
    try:
        counters = await budgets.current(now)
    except StoreUnavailable:
        return Rejection(503, "budget_store_unavailable", "the usage counters are unreachable").response()
    periods: dict[str, Any] = {}
    for period in PERIODS:
        start, end = window(period, now)
        periods[period] = {"window_start": iso(start), "resets_at": iso(end), "identities": {}, "groups": {}}
    for key, spent in sorted(
        counters.items(), key=lambda item: (item[0].period, item[0].scope, item[0].subject)
    ):
        section = periods[key.period]["identities" if key.scope == "identity" else "groups"]
        section[key.subject] = {"tokens": spent.tokens, "cost_usd": round(spent.cost_usd, 6)}
    return web.json_response(
        {
            "generated_at": iso(now),
            "store": budgets.store.name,
            "periods": periods,
            "budgets": [rule.model_dump(exclude_none=True) for rule in budgets.rules],
        }
    )


async def prices(request: web.Request) -> web.Response:
    return web.json_response(request.app[BUDGETS].prices.as_json())
