"""The HTTP edge against hostile clients, each attack replayed on real loopback sockets.

Slowloris (partial request heads held open), a web page using an unauthenticated developer
relay (cross-site WebSocket, DNS rebinding), a flood of failed authentications, and the headers
every response carries. Relays here are served as ``relay serve`` serves them
(:func:`relay.cli.start_server`, the guard in front), or as a ``relay serve`` process (uvloop).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from relay.app import create_app
from relay.cli import start_server
from relay.io.guard import STALLED_AFTER_S
from relay.settings import Settings
from tests.conftest import TOKEN, RelayFactory, RelayHandle, in_process_settings
from tests.support.relay_process import relay_process
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.tls import self_signed

ROOT = Path(__file__).resolve().parents[2]
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@dataclass
class Edge:
    port: int
    settings: Settings
    registry: CollectorRegistry

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


EdgeFactory = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def serve(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EdgeFactory]:
    """Relays served the way the CLI serves them, on ephemeral loopback ports."""
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "RELAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> Edge:
        settings = in_process_settings(port=0, **overrides)
        registry = CollectorRegistry()
        runner, site = await start_server(create_app(settings, registry), settings)
        runners.append(runner)
        return Edge(site.port, settings, registry)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    server = await ScriptedUpstream().start()
    yield server
    await server.close()


# ---------------------------------------------------------------------- raw sockets
async def _partial(
    port: int, source: str = "127.0.0.1", head: bytes = PARTIAL_HEAD
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sent part of a request head and stops there."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(head)
    await writer.drain()
    return reader, writer


async def _until_closed(reader: asyncio.StreamReader) -> float:
    """Read until the relay closes the connection (FIN or RST); returns when it happened."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    return time.monotonic()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[str, str], bytes]:
    """One request on an open connection; the response's status, headers and body."""
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
    return int(status_line.split()[1]), headers, body


def _get(path: str, host: str = "127.0.0.1", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode() + extra + b"\r\n"


def _upgrade(path: str = "/v1/realtime", extra: bytes = b"") -> bytes:
    return _get(
        path,
        extra=b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + extra,
    )


def _still_open(reader: asyncio.StreamReader) -> bool:
    return not reader.at_eof() and reader.exception() is None


# ---------------------------------------------------------------------- 1. slowloris
async def test_slowloris_heads_are_closed_at_the_header_timeout(serve: EdgeFactory) -> None:
    """300 partial heads (aiohttp alone kept all 300 open for an hour), one that keeps dribbling
    a byte every 100 ms and one that starts with empty lines: every one is closed at the 1 s
    timeout, counted from its connection, however it trickles."""
    edge = await serve(header_timeout_s=1.0, max_unfinished_heads=1000, max_unfinished_heads_per_peer=1000)
    opened: list[float] = []
    conns = []
    for _ in range(300):
        opened.append(time.monotonic())
        conns.append(await _partial(edge.port))
    unfinished, now = edge.metric("relay_edge_unfinished_heads"), time.monotonic()
    # All 300 counted, less any that a busy machine took longer than the timeout to open after
    # the first (those are already closed, as they should be).
    assert sum(now - at < 0.9 for at in opened) <= unfinished <= 300
    assert unfinished == 300 or now - opened[0] > 0.9
    opened.append(time.monotonic())
    dribbler = await _partial(edge.port, head=b"G")
    conns.append(dribbler)

    async def dribble() -> None:
        for byte in b"ET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            await asyncio.sleep(0.1)
            dribbler[1].write(bytes([byte]))

    opened.append(time.monotonic())
    conns.append(await _partial(edge.port, head=b"\r\n\r\n\nGET /healthz HTTP/1.1\r\n"))  # empty lines first
    trickle = asyncio.create_task(dribble())
    try:
        closed = await asyncio.wait_for(asyncio.gather(*(_until_closed(r) for r, _ in conns)), 4.0)
    finally:
        trickle.cancel()
        for _, writer in conns:
            writer.close()
    lifetimes = [end - start for start, end in zip(opened, closed, strict=True)]
    assert min(lifetimes) >= 0.9, "closed before the timeout"
    assert max(lifetimes) <= 2.0, "held past the timeout"
    assert edge.metric("relay_edge_refusals_total", {"reason": "header_timeout"}) == 302
    assert edge.metric("relay_edge_unfinished_heads") == 0


async def test_unfinished_heads_are_capped_per_peer_and_overall(serve: EdgeFactory) -> None:
    """Beyond the caps on stalled heads (unfinished after STALLED_AFTER_S) a new connection is
    closed at once, long before the header timeout; a head that completes frees its place.
    Peers are 127.0.0.1, .2 and .3 (all loopback)."""
    edge = await serve(header_timeout_s=8.0, max_unfinished_heads=8, max_unfinished_heads_per_peer=5)
    held = [await _partial(edge.port) for _ in range(5)]
    await asyncio.sleep(STALLED_AFTER_S + 0.2)
    reader, _ = await _partial(edge.port)  # a sixth from the same peer
    start = time.monotonic()
    assert await asyncio.wait_for(_until_closed(reader), 1.0) - start < 1.0
    held += [await _partial(edge.port, source="127.0.0.2") for _ in range(3)]
    await asyncio.sleep(STALLED_AFTER_S + 0.2)
    reader, _ = await _partial(edge.port, source="127.0.0.3")  # a ninth overall
    start = time.monotonic()
    assert await asyncio.wait_for(_until_closed(reader), 1.0) - start < 1.0
    assert edge.metric("relay_edge_refusals_total", {"reason": "peer_unfinished_heads"}) == 1
    assert edge.metric("relay_edge_refusals_total", {"reason": "unfinished_heads"}) == 1
    assert edge.metric("relay_edge_unfinished_heads") == 8
    assert all(_still_open(r) for r, _ in held)

    # One held head completes: it is answered, and its place is free for a new peer at once.
    status, _, _ = await _exchange(*held[0], b"1\r\n\r\n")
    assert status == 200
    status, _, _ = await _exchange(*await _partial(edge.port, "127.0.0.3", b""), _get("/healthz"))
    assert status == 200
    for _, writer in held:
        writer.close()


async def test_a_burst_of_upgrades_from_one_address_is_served(
    serve: EdgeFactory, upstream: ScriptedUpstream
) -> None:
    """A load test, a NAT or a proxy opens many sessions at once from one address: hundreds of
    heads are unfinished for a moment, none stalled. Every one is served (the per-peer cap of
    32 once refused all but ~32 of 150 with a bare close)."""
    edge = await serve(upstream="simulator", upstream_url=upstream.url)
    assert edge.settings.max_unfinished_heads_per_peer < 150
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def session() -> str:
        async with websockets.connect(edge.ws_url, additional_headers=auth, open_timeout=20) as ws:
            return str(orjson.loads(await asyncio.wait_for(ws.recv(), 20))["type"])

    types = await asyncio.gather(*(session() for _ in range(150)))
    assert types == ["session.created"] * 150
    assert edge.metric("relay_edge_refusals_total", {"reason": "peer_unfinished_heads"}) == 0


async def test_keep_alive_and_websockets_outlive_the_header_timeout(
    serve: EdgeFactory, upstream: ScriptedUpstream
) -> None:
    """The guard is gone once the first head is whole: later requests on a keep-alive
    connection and a WebSocket session run past the header timeout; an idle keep-alive
    connection is closed after keepalive_timeout_s."""
    edge = await serve(
        header_timeout_s=0.5, keepalive_timeout_s=1.0, upstream="simulator", upstream_url=upstream.url
    )
    async with websockets.connect(edge.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert orjson.loads(await ws.recv())["type"] == "session.created"
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        assert (await _exchange(reader, writer, _get("/healthz")))[0] == 200
        await asyncio.sleep(0.7)  # past the header timeout, idle but within keep-alive
        assert (await _exchange(reader, writer, _get("/metrics")))[0] == 200
        answered = time.monotonic()
        idle_for = await asyncio.wait_for(_until_closed(reader), 3.0) - answered
        assert 0.8 <= idle_for <= 2.0
        writer.close()
        await asyncio.wait_for(await ws.ping(), 2.0)  # the session, 1.5 s old, still answers
    assert edge.metric("relay_edge_refusals_total", {"reason": "header_timeout"}) == 0


async def test_relay_serve_guards_its_socket_under_uvloop() -> None:
    """The process users run (uvloop's transports): a partial head is closed at the timeout;
    keep-alive requests and a WebSocket session pass the guard; garbage costs no tracebacks."""
    async with relay_process(RELAY_HEADER_TIMEOUT_S="1", RELAY_SIMULATOR_SPEED="50") as relay:
        reader, writer = await _partial(relay.port)
        start = time.monotonic()
        async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "session.created"
            held_for = await asyncio.wait_for(_until_closed(reader), 3.0) - start
            assert 0.9 <= held_for <= 2.0
            await asyncio.wait_for(await ws.ping(), 2.0)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        for path in ("/healthz", "/readyz", "/metrics"):
            status, _, body = await _exchange(reader, writer, _get(path))
            assert status == 200
        assert b'relay_edge_refusals_total{reason="header_timeout"} 1.0' in body
        writer.close()
        # Requests aiohttp cannot parse: answered 400 as "relay", one short log line, no traceback.
        for _ in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            status, headers, _ = await _exchange(reader, writer, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
            assert (status, headers["server"]) == (400, "relay")
            writer.close()
    assert relay.proc.stderr is not None
    err = relay.proc.stderr.read()
    assert err.count(b"malformed request from 127.0.0.1 answered 400") == 1
    assert b"Traceback" not in err


async def _check_tls_edge(port: int, context: ssl.SSLContext, auth: dict[str, str]) -> None:
    """Requests and a WebSocket pass the guard over TLS; a handshake never begun and a head
    never finished are both closed at the (1 s) timeout."""
    start = time.monotonic()
    silent, silent_writer = await asyncio.open_connection("127.0.0.1", port)  # no handshake
    slow, slow_writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    slow_writer.write(PARTIAL_HEAD)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    for path in ("/healthz", "/readyz"):
        status, headers, _ = await _exchange(reader, writer, _get(path))
        assert (status, headers["server"]) == (200, "relay")
    ends = await asyncio.wait_for(asyncio.gather(_until_closed(silent), _until_closed(slow)), 3.0)
    assert all(0.9 <= end - start <= 2.0 for end in ends)
    async with websockets.connect(
        f"wss://127.0.0.1:{port}/v1/realtime", additional_headers=auth, ssl=context
    ) as ws:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "session.created"
    for w in (silent_writer, slow_writer, writer):
        w.close()


async def test_tls_under_uvloop_is_guarded(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    async with relay_process(
        RELAY_HEADER_TIMEOUT_S="1",
        RELAY_SIMULATOR_SPEED="50",
        RELAY_TLS_CERT_FILE=str(cert),
        RELAY_TLS_KEY_FILE=str(key),
    ) as relay:
        await _check_tls_edge(relay.port, ssl.create_default_context(cafile=str(cert)), relay.auth)


async def test_tls_under_asyncio_is_guarded(serve: EdgeFactory, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    edge = await serve(
        header_timeout_s=1.0, tls_cert_file=str(cert), tls_key_file=str(key), simulator_speed=50.0
    )
    context = ssl.create_default_context(cafile=str(cert))
    await _check_tls_edge(edge.port, context, {"Authorization": f"Bearer {TOKEN}"})
    assert edge.metric("relay_edge_refusals_total", {"reason": "header_timeout"}) == 1


# ---------------------------------------------------------------------- 2. cross-site use
async def _dev_relay(start_relay: RelayFactory, upstream: ScriptedUpstream) -> RelayHandle:
    """What scripts/run.sh starts: no client tokens, loopback only."""
    return await start_relay(
        client_tokens=[], allow_unauthenticated=True, upstream="simulator", upstream_url=upstream.url
    )


@pytest.mark.parametrize("path", ["/v1/realtime", "/", "/metrics", "/healthz", "/readyz", "/static/app.js"])
async def test_an_unauthenticated_relay_refuses_other_sites(
    start_relay: RelayFactory, upstream: ScriptedUpstream, path: str
) -> None:
    """Without client tokens the relay serves only loopback Host names and its own Origin:
    a web page elsewhere (Origin) and DNS rebinding (Host: attacker's name) get 403."""
    relay = await _dev_relay(start_relay, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.server.port)
    refused = [
        _upgrade(path, b"Origin: https://evil.example\r\n"),
        _upgrade(path, b"Origin: null\r\n"),
        _upgrade(path, f"Origin: http://localhost:{relay.server.port}\r\n".encode()),  # not its Host
        _get(path, host=f"evil.example:{relay.server.port}"),
        _get(path, host="127.0.0.1.evil.example"),
        _get(path, host=""),
    ]
    for request in refused:
        status, _, body = await _exchange(reader, writer, request)
        assert status == 403, request
        assert orjson.loads(body)["error"]["code"] in ("cross_site_origin", "host_not_allowed")
    assert relay.metric("relay_edge_refusals_total", {"reason": "cross_site_origin"}) == 3
    assert relay.metric("relay_edge_refusals_total", {"reason": "host_not_allowed"}) == 3
    assert upstream.connections == []
    writer.close()


async def test_an_unauthenticated_relay_serves_its_own_pages_and_native_clients(
    start_relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    relay = await _dev_relay(start_relay, upstream)
    port = relay.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for name in ("127.0.0.1", "localhost", "[::1]", "LocalHost", "127.0.0.2"):
        for path in ("/", "/healthz", "/metrics"):
            status, _, _ = await _exchange(reader, writer, _get(path, host=f"{name}:{port}"))
            assert status == 200, (name, path)
    writer.close()
    for origin in (None, f"http://127.0.0.1:{port}", f"https://127.0.0.1:{port}"):
        headers = {"Origin": origin} if origin else {}
        async with websockets.connect(relay.ws_url, additional_headers=headers) as ws:
            assert orjson.loads(await ws.recv())["type"] == "session.created"
    async with websockets.connect(
        f"ws://localhost:{port}/v1/realtime", additional_headers={"Origin": f"http://localhost:{port}"}
    ) as ws:
        assert orjson.loads(await ws.recv())["type"] == "session.created"


async def test_an_authenticated_relay_keeps_serving_any_host(
    start_relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    """Behind a load balancer the Host is the public name: only the unauthenticated relay checks it."""
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    async with (
        aiohttp.ClientSession() as http,
        http.get(relay.http_url + "/healthz", headers={"Host": "relay.example.com"}) as resp,
    ):
        assert resp.status == 200


@pytest.mark.slow
async def test_console_works_and_other_sites_are_refused_in_chromium(
    start_relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    """The console under its Content-Security-Policy, from http://127.0.0.1:PORT/ and
    http://localhost:PORT/; a page on another origin cannot open the relay's WebSocket."""
    from tests.support.system import require_binary

    chromium = require_binary("chromium", package="chromium")
    pytest.importorskip("playwright")
    from playwright.async_api import async_playwright, expect

    relay = await _dev_relay(start_relay, upstream)
    port = relay.server.port
    attacker = web.Application()
    page_html = (
        f"<script>const ws = new WebSocket('ws://127.0.0.1:{port}/v1/realtime');"
        "ws.onopen = () => document.title = 'opened';"
        f"ws.onclose = () => document.title = 'refused';</script>"
    )

    async def attacker_page(request: web.Request) -> web.Response:
        return web.Response(text=page_html, content_type="text/html")

    attacker.router.add_get("/", attacker_page)
    evil = TestServer(attacker, host="127.0.0.1")
    await evil.start_server()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
            )
            violations: list[str] = []
            for host in ("127.0.0.1", "localhost"):
                page = await browser.new_page()
                page.on(
                    "console", lambda m: violations.append(m.text) if "Security Policy" in m.text else None
                )
                await page.goto(f"http://{host}:{port}/")
                await page.get_by_test_id("connect").click()
                await expect(page.get_by_test_id("session-id")).to_contain_text("sess_", timeout=5_000)
                await page.close()
            assert violations == []
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{evil.port}/")
            await expect(page).to_have_title("refused", timeout=5_000)
            await browser.close()
    finally:
        await evil.close()
    assert relay.metric("relay_edge_refusals_total", {"reason": "cross_site_origin"}) == 1
    assert len(upstream.connections) == 2


# ---------------------------------------------------------------------- 5. failed authentications
async def test_a_flood_of_failed_authentications_is_throttled(
    start_relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    """2000 bad tokens as fast as one client can send them: the first 50 (the burst) get 401,
    then 429 and the connection closes; guessing proceeds at about 20/s, a valid token from
    that address waits too, another address is unaffected, and the log has a few lines."""
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    statuses: list[int] = []
    closed_after_429 = 0
    started = time.monotonic()
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.server.port)
        while len(statuses) < 2000:
            status, headers, _ = await _exchange(
                reader, writer, _upgrade(extra=b"Authorization: Bearer wrong-token\r\n")
            )
            statuses.append(status)
            if status == 429:
                assert headers["connection"] == "close"
                assert headers["retry-after"] == "1"
                await asyncio.wait_for(_until_closed(reader), 2.0)
                closed_after_429 += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", relay.server.port)
        # The valid token right after a refusal, on a connection already open: a reconnect's
        # wait could let the 20/s refill hand it the next token on a slow machine.
        spare, spare_writer = await asyncio.open_connection("127.0.0.1", relay.server.port)
        while True:  # one more refusal (after a 401 or two, if the refill let them through)
            bad = _upgrade(extra=b"Authorization: Bearer wrong-token\r\n")
            status, _, _ = await _exchange(reader, writer, bad)
            statuses.append(status)
            if status == 429:
                break
        status, _, body = await _exchange(
            spare, spare_writer, _upgrade(extra=f"Authorization: Bearer {TOKEN}\r\n".encode())
        )
        assert (status, orjson.loads(body)["error"]["code"]) == (429, "auth_rate_limited")
        elapsed = time.monotonic() - started
        await asyncio.wait_for(_until_closed(reader), 2.0)
        closed_after_429 += 1
        writer.close()
        spare_writer.close()
        other, other_writer = await _partial(relay.server.port, "127.0.0.2", b"")
        assert (await _exchange(other, other_writer, _upgrade(extra=b"Authorization: Bearer x\r\n")))[
            0
        ] == 401
        other_writer.close()
    assert statuses[:50] == [401] * 50
    # Then refused: at once, unless the 50 took long enough on a busy machine for the 20/s refill
    # to let one or two more through (the count below bounds them the same way).
    assert 50 <= statuses.index(429) <= 50 + 20 * elapsed + 1
    assert statuses.count(401) <= 50 + 20 * elapsed + 1
    assert closed_after_429 == statuses.count(429)
    assert relay.metric("relay_auth_rejections_total", {"reason": "invalid_token"}) == statuses.count(401) + 1
    assert (
        relay.metric("relay_auth_rejections_total", {"reason": "auth_rate_limited"})
        == statuses.count(429) + 1
    )
    lines = [line for line in logs if line["event"] == "upgrade_rejected"]
    assert len(lines) <= 4, lines  # 127.0.0.1: invalid_token, auth_rate_limited; 127.0.0.2: one
    assert upstream.connections == []


# ---------------------------------------------------------------------- 6. headers
async def test_every_response_names_only_relay_and_carries_security_headers(
    start_relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.server.port)
    for path, expected in (("/", 200), ("/static/app.js", 200), ("/metrics", 200), ("/nowhere", 404)):
        status, headers, _ = await _exchange(reader, writer, _get(path))
        assert (status, headers["server"]) == (expected, "relay")
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    status, headers, _ = await _exchange(
        reader, writer, _upgrade(extra=f"Authorization: Bearer {TOKEN}\r\n".encode())
    )
    assert (status, headers["server"]) == (101, "relay")
    writer.close()


def test_compose_publishes_monitoring_on_loopback_only() -> None:
    """Anonymous Grafana and Prometheus are for the operator's own machine."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    for service in ("prometheus", "grafana"):
        for port in compose["services"][service]["ports"]:
            assert str(port).startswith("127.0.0.1:"), (service, port)
