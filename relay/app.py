"""Application wiring: routes, shared context, the embedded simulator, health and draining."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path

import aiohttp
from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry

from relay.core.client_address import TrustedProxies
from relay.core.credentials import Authenticator, FailureLimiter
from relay.core.overload import SAMPLE_INTERVAL_S, LagMeter
from relay.io.admin import add_usage_routes
from relay.io.budgets import budgets_context
from relay.io.calls import add_call_routes
from relay.io.context import RelayContext, SessionRegistry
from relay.io.cpu_quota import cores_available
from relay.io.guard import LogThrottle
from relay.io.handler import (
    AUTH_FAILURES,
    REJECTION_LOG,
    RELAY_CONTEXT,
    TRUSTED_PROXIES,
    cross_site_refusal,
    log_rejection,
    realtime_endpoint,
)
from relay.io.session_store import SessionStore
from relay.io.ticker import Ticker
from relay.io.upstream import UpstreamConfig
from relay.io.workers import all_workers_metrics
from relay.observability.logging import get_logger, register_secret
from relay.observability.metrics import RelayMetrics
from relay.settings import Settings

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
METRICS: web.AppKey[RelayMetrics] = web.AppKey("metrics", RelayMetrics)
SIMULATOR_URL: web.AppKey[str] = web.AppKey("simulator_url", str)
WORKER_DIR: web.AppKey[str] = web.AppKey("worker_dir", str)  # one of several workers (relay.io.workers)

_log = get_logger()


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> web.Application:
    """The relay as an aiohttp application (tests run it on a real localhost port)."""
    app = web.Application(middlewares=[] if settings.auth_configured else [_same_site_only])
    app[SETTINGS] = settings
    app[METRICS] = RelayMetrics(registry if registry is not None else CollectorRegistry())
    app[AUTH_FAILURES] = FailureLimiter(settings.auth_failures_per_s, settings.auth_failure_burst)
    app[REJECTION_LOG] = LogThrottle()
    app[TRUSTED_PROXIES] = TrustedProxies(settings.trusted_proxies)
    app.on_response_prepare.append(_edge_headers)
    _register_secrets(settings)
    app.cleanup_ctx.append(_embedded_simulator)
    # Before the sessions' context: torn down after them, so their last spends are counted.
    app.cleanup_ctx.append(budgets_context(settings, app[METRICS]))
    app.cleanup_ctx.append(_relay_context)
    # aiohttp waits for running handlers (a WebSocket's lasts as long as its session) before the
    # cleanup contexts run: sessions still open then are closed here, at shutdown, not 60 s later.
    app.on_shutdown.append(_close_open_sessions)
    app.router.add_get("/v1/realtime", realtime_endpoint)
    if settings.calls_enabled:
        add_call_routes(app)  # POST /v1/realtime/calls/{call_id}/accept|reject|refer|hangup
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    add_usage_routes(app, settings)  # /admin/usage, /v1/relay/prices
    if settings.console_enabled:
        _add_console(app)
    return app


def _register_secrets(settings: Settings) -> None:
    for secret in (settings.openai_api_key, settings.azure_openai_api_key, settings.jwt_secret):
        if secret is not None:
            register_secret(secret.get_secret_value())
    for token in settings.client_tokens:
        register_secret(token.get_secret_value())


async def _embedded_simulator(app: web.Application) -> AsyncIterator[None]:
    """With no provider configured, run the simulator in-process on a loopback port."""
    settings = app[SETTINGS]
    if settings.upstream_kind != "simulator" or settings.upstream_url:
        yield
        return
    from relay.simulator.config import SimulatorConfig
    from relay.simulator.server import start_simulator

    # No /_sim/ control API here: a local page or process could read sessions and inject replies.
    runner, port = await start_simulator(SimulatorConfig(speed=settings.simulator_speed, control_api=False))
    app[SIMULATOR_URL] = f"ws://127.0.0.1:{port}/v1/realtime"
    _log.info("embedded_simulator_started", port=port)
    try:
        yield
    finally:
        await runner.cleanup()


async def _relay_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        app[RELAY_CONTEXT] = RelayContext(
            settings=settings,
            http=http,
            upstreams=UpstreamConfig(
                settings,
                simulator_url=app.get(SIMULATOR_URL),
                token_provider=await _entra_token_provider(settings),
            ),
            metrics=app[METRICS],
            authenticator=Authenticator(settings),
            registry=SessionRegistry(
                settings.max_sessions, settings.max_sessions_per_identity, settings.max_sessions_per_token
            ),
            overload=LagMeter(settings.overload_lag_ms / 1000, settings.overload_cpu_percent / 100),
            store=_session_store(settings, app[METRICS]),
            ticker=Ticker(min(0.5, settings.ping_interval_s / 4)),
        )
        store = app[RELAY_CONTEXT].store
        if store is not None:
            store.start()
        watch = asyncio.create_task(_watch_loop_lag(app[RELAY_CONTEXT]), name="loop lag")
        ticking = asyncio.create_task(app[RELAY_CONTEXT].ticker.run(), name="housekeeping")
        try:
            yield
        finally:
            watch.cancel()
            await close_sessions(app, code=1001)
            ticking.cancel()
            if store is not None:  # after the sessions: their ends are written
                await store.close()


def _session_store(settings: Settings, metrics: RelayMetrics) -> SessionStore | None:
    """Conversations in Redis when it is configured and clients may resume at all."""
    if settings.redis_url is None or settings.resume_grace_s <= 0:
        return None
    return SessionStore(
        settings.redis_url.get_secret_value(),
        timeout_s=settings.redis_timeout_s,
        lease_s=settings.session_lease_s,
        # A conversation whose owner died can be resumed for the grace period after its lease.
        ttl_s=settings.resume_grace_s + settings.session_lease_s + 30,
        metrics=metrics,
    )


_QUOTA_EVERY = 100  # samples between two reads of the cgroup's CPU limit (10 s)


async def _watch_loop_lag(ctx: RelayContext) -> None:
    """Sample how late a timer fires and the CPU used, a few times a second (admission control:
    core/overload)."""
    loop = asyncio.get_running_loop()
    meter, metrics = ctx.overload, ctx.metrics
    cpu = time.process_time()
    for sample in itertools.count():
        if sample % _QUOTA_EVERY == 0:  # a pod's limit can be resized in place
            cores = cores_available()
        started = loop.time()
        await asyncio.sleep(SAMPLE_INTERVAL_S)
        elapsed, used = loop.time() - started, time.process_time()
        share, cpu = (used - cpu) / max(elapsed, 1e-3) / cores, used
        was = meter.overloaded
        if meter.sample(elapsed - SAMPLE_INTERVAL_S, share, len(ctx.registry.sessions)) != was:
            _log.warning(
                "overload" if meter.overloaded else "overload_over",
                lag_s=round(meter.smoothed_s, 4),
                cpu_share=round(meter.cpu_share, 3),
            )
        metrics.event_loop_lag_seconds.set(meter.smoothed_s)
        metrics.cpu_share.set(meter.cpu_share)
        metrics.overloaded.set(1 if meter.overloaded else 0)


async def _entra_token_provider(settings: Settings):  # type: ignore[no-untyped-def]
    if not (settings.upstream_kind == "azure" and settings.azure_use_entra_id):
        return None
    from relay.io.entra import EntraTokenProvider

    return EntraTokenProvider().token


# ---------------------------------------------------------------------- the HTTP edge
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The console loads only its own script, worklet and stylesheet and opens a WebSocket back to
# the relay ('self' covers ws:/wss: of the same host in CSP Level 3); no page may frame it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@web.middleware
async def _same_site_only(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Installed only when the relay runs without client authentication (every route)."""
    refusal = cross_site_refusal(request)
    if refusal is None:
        return await handler(request)
    request.app[METRICS].edge_refusals_total.labels(refusal.reason).inc()
    log_rejection(request, refusal)
    return refusal.response()


async def _edge_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, the 101 included, names only ``relay`` (no aiohttp or Python version)."""
    response.headers[hdrs.SERVER] = "relay"
    if response.status != 101:
        response.headers.setdefault(hdrs.CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        response.headers.setdefault(hdrs.X_CONTENT_TYPE_OPTIONS, "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")


# ---------------------------------------------------------------------- health and metrics
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app.get(RELAY_CONTEXT)
    if ctx is None or ctx.draining:
        return web.json_response({"status": "draining"}, status=503)
    if ctx.upstream_unreachable(time.monotonic()):
        return web.json_response({"status": "upstream_unreachable"}, status=503)
    if not ctx.overload.admits(len(ctx.registry.sessions)):  # those here keep being served
        return web.json_response(
            {
                "status": "overloaded",
                "lag_s": round(ctx.overload.smoothed_s, 4),
                "cpu_share": round(ctx.overload.cpu_share, 3),
            },
            status=503,
        )
    body: dict[str, object] = {"status": "ready", "sessions": len(ctx.registry.sessions)}
    if ctx.store is not None:  # still ready without it: sessions work, resume stays on this process
        body["session_store"] = "up" if ctx.store.up else "down"
    return web.json_response(body)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """This process's metrics; with several workers, all of theirs merged (one server)."""
    body, content_type = request.app[METRICS].render()
    directory = request.app.get(WORKER_DIR)
    if directory is not None:
        body = await all_workers_metrics(directory, request.app[SETTINGS].workers)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


# ---------------------------------------------------------------------- console page
def _static_dir() -> Path:
    return Path(str(resources.files("relay") / "web" / "static"))


def _add_console(app: web.Application) -> None:
    static = _static_dir()
    if not (static / "index.html").is_file():
        return

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static / "index.html")

    app.router.add_get("/", index)
    app.router.add_static("/static/", static)


# ---------------------------------------------------------------------- draining
async def drain(app: web.Application, grace_s: float) -> None:
    """Stop admitting (readyz 503), let sessions finish for ``grace_s``, then close them 1012
    (service restart: the SDKs reconnect on it, to a replica that is not going away)."""
    ctx = app[RELAY_CONTEXT]
    ctx.draining = True
    _log.info("drain_started", sessions=len(ctx.registry.sessions), grace_s=grace_s)
    if ctx.store is not None:
        # Shared state: every conversation is saved and let go at once; its client reconnects
        # (1012) and resumes on another replica. Those that could not be saved wait as below.
        conversations = list(ctx.registry.sessions.values())
        parked = await asyncio.gather(*(c.park("drain") for c in conversations), return_exceptions=True)
        _log.info("drain_parked", parked=sum(1 for p in parked if p is True), sessions=len(conversations))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.registry.empty.wait(), timeout=grace_s)
    await close_sessions(app, code=1012)


async def _close_open_sessions(app: web.Application) -> None:
    await close_sessions(app, code=1001)


async def close_sessions(app: web.Application, code: int) -> None:
    ctx = app.get(RELAY_CONTEXT)
    if ctx is None or not ctx.registry.sessions:
        return
    remaining = await ctx.registry.close_all(code)
    if remaining:
        _log.warning("sessions_did_not_close", remaining=remaining)
