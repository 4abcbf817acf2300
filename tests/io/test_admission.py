"""Refusals happen at the HTTP upgrade, with a JSON body naming the reason."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from relay.io.registry import CapacityExceeded, SessionRegistry
from tests.conftest import TOKEN, RelayFactory
from tests.support.scripted_upstream import ScriptedUpstream


async def _upgrade(url: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    """Attempt an upgrade with plain HTTP so the status and body can be read."""
    base = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with aiohttp.ClientSession() as http, http.get(url, headers={**base, **headers}) as resp:
        body = await resp.json() if resp.status != 101 else {}
        return resp.status, body


@pytest.fixture
async def upstream() -> ScriptedUpstream:
    server = await ScriptedUpstream().start()
    yield server  # type: ignore[misc]
    await server.close()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_credentials"),
        ({"Authorization": "Bearer wrong-token"}, "invalid_token"),
        ({"Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key.wrong"}, "invalid_token"),
    ],
)
async def test_bad_credentials_get_401(
    start_relay: RelayFactory, upstream: ScriptedUpstream, headers: dict[str, str], reason: str
) -> None:
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    status, body = await _upgrade(relay.ws_url, headers)
    assert status == 401
    assert body["error"]["code"] == reason  # type: ignore[index]
    assert upstream.connections == []
    assert relay.metric("relay_auth_rejections_total", {"reason": reason}) == 1


async def test_origin_and_model_policy_get_403(start_relay: RelayFactory, upstream: ScriptedUpstream) -> None:
    relay = await start_relay(
        upstream="simulator",
        upstream_url=upstream.url,
        allowed_origins=["https://app.example"],
        allowed_models=["gpt-realtime"],
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body = await _upgrade(relay.ws_url, {**auth, "Origin": "https://evil.example"})
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")  # type: ignore[index]
    status, body = await _upgrade(relay.ws_url + "?model=gpt-other", auth)
    assert (status, body["error"]["code"]) == (403, "model_not_allowed")  # type: ignore[index]
    status, _ = await _upgrade(
        relay.ws_url + "?model=gpt-realtime", {**auth, "Origin": "https://app.example"}
    )
    assert status == 101


async def test_session_caps_get_429(start_relay: RelayFactory, upstream: ScriptedUpstream) -> None:
    other = "second-token-abcdefghijkl"
    relay = await start_relay(
        upstream="simulator",
        upstream_url=upstream.url,
        max_sessions=3,
        max_sessions_per_token=2,
        client_tokens=[TOKEN, other],
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        websockets.connect(relay.ws_url, additional_headers=auth),
        websockets.connect(relay.ws_url, additional_headers=auth),
    ):
        status, body = await _upgrade(relay.ws_url, auth)
        assert (status, body["error"]["code"]) == (429, "identity_session_cap")  # type: ignore[index]
        assert "2 per token" in body["error"]["message"]  # type: ignore[index]
        assert "RELAY_MAX_SESSIONS_PER_TOKEN" in body["error"]["message"]  # type: ignore[index]
        other_auth = {"Authorization": f"Bearer {other}"}
        async with websockets.connect(relay.ws_url, additional_headers=other_auth):
            status, body = await _upgrade(relay.ws_url, other_auth)
            assert (status, body["error"]["code"]) == (429, "global_session_cap")  # type: ignore[index]
            assert "RELAY_MAX_SESSIONS" in body["error"]["message"]  # type: ignore[index]
    # Capacity comes back once sessions end.
    await asyncio.sleep(0.2)
    async with websockets.connect(relay.ws_url, additional_headers=auth):
        pass


async def test_a_shared_static_token_is_not_capped_like_one_user(
    start_relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    """The README's quick path is one token for a whole app: 60 users at once must get in,
    beyond the per-user (JWT) default of 50; only the global cap applies to it by default."""
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url, max_sessions=60)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    clients = [await websockets.connect(relay.ws_url, additional_headers=auth) for _ in range(60)]
    try:
        status, body = await _upgrade(relay.ws_url, auth)
        assert (status, body["error"]["code"]) == (429, "global_session_cap")  # type: ignore[index]
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_draining_relay_gets_503(start_relay: RelayFactory, upstream: ScriptedUpstream) -> None:
    from relay.io.handler import RELAY_CONTEXT

    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    relay.app[RELAY_CONTEXT].draining = True
    status, body = await _upgrade(relay.ws_url, {"Authorization": f"Bearer {TOKEN}"})
    assert (status, body["error"]["code"]) == (503, "draining")  # type: ignore[index]
    async with aiohttp.ClientSession() as http, http.get(relay.http_url + "/readyz") as resp:
        assert resp.status == 503


async def test_browser_subprotocol_auth_never_echoes_the_token(
    start_relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    protocols = ["realtime", f"openai-insecure-api-key.{TOKEN}"]
    async with websockets.connect(relay.ws_url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        raw_headers = str(ws.response.headers)
        assert TOKEN not in raw_headers
        assert '"session.created"' in await ws.recv()


def _keypair(kind: str) -> tuple[str, str]:
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256"])
async def test_jwt_tokens(start_relay: RelayFactory, upstream: ScriptedUpstream, algorithm: str) -> None:
    if algorithm == "HS256":
        signing_key = verify = "s" * 32
        relay = await start_relay(
            upstream="simulator",
            upstream_url=upstream.url,
            client_tokens=[],
            jwt_secret=verify,
            jwt_audience="relay",
        )
    else:
        signing_key, verify = _keypair(algorithm)
        relay = await start_relay(
            upstream="simulator",
            upstream_url=upstream.url,
            client_tokens=[],
            jwt_public_key=verify,
            jwt_audience="relay",
        )
    now = int(time.time())

    def token(**claims: object) -> str:
        base = {"sub": "user-1", "tenant": "acme", "aud": "relay", "exp": now + 60}
        return jwt.encode({**base, **claims}, signing_key, algorithm=algorithm)

    cases = {
        token(): 101,
        token(exp=now - 10): 401,
        token(nbf=now + 600): 401,
        token(aud="someone-else"): 401,
    }
    for value, expected in cases.items():
        status, _ = await _upgrade(relay.ws_url, {"Authorization": f"Bearer {value}"})
        assert status == expected


async def test_a_jwt_user_is_capped_per_identity(
    start_relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    relay = await start_relay(
        upstream="simulator",
        upstream_url=upstream.url,
        client_tokens=[],
        jwt_secret="s" * 32,
        max_sessions_per_identity=2,
    )
    exp = int(time.time()) + 60

    def auth(sub: str) -> dict[str, str]:
        signed = jwt.encode({"sub": sub, "exp": exp}, "s" * 32, algorithm="HS256")
        return {"Authorization": f"Bearer {signed}"}

    async with (
        websockets.connect(relay.ws_url, additional_headers=auth("user-1")),
        websockets.connect(relay.ws_url, additional_headers=auth("user-1")),
    ):
        status, body = await _upgrade(relay.ws_url, auth("user-1"))
        assert (status, body["error"]["code"]) == (429, "identity_session_cap")  # type: ignore[index]
        assert "2 per identity; RELAY_MAX_SESSIONS_PER_IDENTITY" in body["error"]["message"]  # type: ignore[index]
        status, _ = await _upgrade(relay.ws_url, auth("user-2"))
        assert status == 101


async def test_unauthenticated_clients_are_one_app_not_one_user(
    start_relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    """The quick start's relay (no tokens, loopback) serves a developer's whole app, and load
    tests run against it: the per-user cap must not stop it at a handful of sessions."""
    relay = await start_relay(
        upstream="simulator", upstream_url=upstream.url, client_tokens=[], allow_unauthenticated=True
    )
    cap = relay.settings.max_sessions_per_identity
    sessions = [websockets.connect(relay.ws_url) for _ in range(cap + 5)]
    opened = await asyncio.gather(*sessions)
    try:
        assert len(opened) == cap + 5
    finally:
        await asyncio.gather(*(ws.close() for ws in opened))


async def _raw_upgrade(port: int, header: bytes) -> tuple[int, dict[str, object]]:
    """An upgrade whose credential header is raw bytes (aiohttp's client only sends text)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + header + b"\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    writer.close()
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer \xff\xfe",
        b"Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.\xff\xfe",
    ],
)
async def test_credentials_that_are_not_utf8_get_401(
    start_relay: RelayFactory, upstream: ScriptedUpstream, header: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """They used to raise inside the comparison: HTTP 500 and a traceback at ERROR."""
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    with caplog.at_level(logging.ERROR):
        status, body = await _raw_upgrade(relay.server.port, header)
    assert (status, body["error"]["code"]) == (401, "malformed_credentials")  # type: ignore[index]
    assert relay.metric("relay_auth_rejections_total", {"reason": "malformed_credentials"}) == 1
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert upstream.connections == []


async def test_jwt_lifetime_and_claim_types_are_enforced(
    start_relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    """A 10-year token and an ``exp`` written as a string both passed before."""
    secret = "s" * 32
    relay = await start_relay(
        upstream="simulator",
        upstream_url=upstream.url,
        client_tokens=[],
        jwt_secret=secret,
        jwt_audience="relay",
        jwt_max_lifetime_s=3600,
    )
    now = int(time.time())

    def token(**claims: object) -> dict[str, str]:
        signed = jwt.encode({"sub": "user-1", "aud": "relay", **claims}, secret, algorithm="HS256")
        return {"Authorization": f"Bearer {signed}"}

    cases = [
        (token(exp=now + 600), 101, None),
        (token(exp=now + 600, iat=now - 60), 101, None),
        (token(exp=now + 10 * 365 * 86400), 401, "token_lifetime_too_long"),
        (token(exp=now + 600, iat=now - 7200), 401, "token_lifetime_too_long"),
        (token(exp=str(now + 600)), 401, "invalid_token"),
        (token(exp=now + 600, nbf=str(now - 60)), 401, "invalid_token"),
    ]
    for headers, expected, reason in cases:
        status, body = await _upgrade(relay.ws_url, headers)
        assert status == expected, (headers, body)
        if reason is not None:
            assert body["error"]["code"] == reason  # type: ignore[index]


def test_a_takeover_may_pass_the_cap_by_one_for_the_conversation_it_replaces() -> None:
    """With several workers the conversation a client comes back to holds its slot on the other
    worker until it is let go, after the takeover's reservation: one over, for that moment."""
    registry = SessionRegistry(max_sessions=10, max_per_identity=1)
    registry.reserve_slot("user", "alice")  # her conversation, on the other worker
    with pytest.raises(CapacityExceeded):
        registry.reserve_slot("user", "alice")  # a new one: over her cap
    registry.reserve_slot("user", "alice", spare=1)  # taking that one over
    with pytest.raises(CapacityExceeded):
        registry.reserve_slot("user", "alice", spare=1)  # never two over
    registry.release("alice")  # the other worker let it go
    assert registry.per_identity["alice"] == 1
