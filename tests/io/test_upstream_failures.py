"""Each way the upstream can fail reaches the client as an OpenAI-shaped error and a telling close.

Retryable failures close 1013 ("try again later"), permanent ones 1008; the relay stays up and
other sessions carry on.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import RelayFactory
from tests.support.scripted_upstream import ScriptedUpstream


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _first_event_and_close(url: str, headers: dict[str, str]) -> tuple[dict[str, Any], int]:
    async with websockets.connect(url, additional_headers=headers) as ws:
        event = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code is not None
        return event, ws.close_code


async def test_unreachable_upstream_is_retryable(start_relay: RelayFactory) -> None:
    relay = await start_relay(upstream="simulator", upstream_url=f"ws://127.0.0.1:{_free_port()}/v1/realtime")
    event, code = await _first_event_and_close(relay.ws_url, relay.auth)
    assert event["type"] == "error"
    assert event["error"]["code"] == "upstream_unreachable"
    assert code == 1013


@pytest.mark.parametrize(
    ("status", "error_code", "close_code"),
    [
        (401, "upstream_auth_failed", 1008),
        (403, "upstream_auth_failed", 1008),
        (429, "upstream_rate_limited", 1013),
        (500, "upstream_unavailable", 1013),
        (503, "upstream_unavailable", 1013),
    ],
)
async def test_handshake_refusals(
    start_relay: RelayFactory, status: int, error_code: str, close_code: int
) -> None:
    upstream = await ScriptedUpstream(http_status=status).start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    event, code = await _first_event_and_close(relay.ws_url, relay.auth)
    assert (event["error"]["code"], code) == (error_code, close_code)
    assert str(status) in event["error"]["message"]
    await upstream.close()


@pytest.mark.parametrize(
    ("api_error", "api_close", "error_code", "close_code"),
    [
        (
            {"code": "invalid_api_key", "message": "Incorrect API key provided: sk-abc***xyz."},
            3000,
            "upstream_auth_failed",
            1008,
        ),
        (
            {"code": "invalid_model", "message": 'Model "gpt-nope" is not supported.'},
            4000,
            "upstream_refused",
            1008,
        ),
    ],
)
async def test_api_closes_after_error_event(
    start_relay: RelayFactory,
    api_error: dict[str, str],
    api_close: int,
    error_code: str,
    close_code: int,
) -> None:
    error = {
        "type": "error",
        "event_id": "event_x",
        "error": {"type": "invalid_request_error", "param": None, "event_id": None, **api_error},
    }
    upstream = await ScriptedUpstream(greet=False, close_after_greeting=(error, api_close)).start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as ws:
        events = []
        with pytest.raises(ConnectionClosed):
            while True:
                events.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert ws.close_code == close_code
    assert events[-1]["error"]["code"] == error_code
    assert all("sk-" not in orjson.dumps(e).decode() for e in events)
    await upstream.close()


async def test_tls_failure_is_reported(start_relay: RelayFactory) -> None:
    # A plain TCP server that is not TLS: the handshake fails on the relay side.
    async def reject(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"this is not tls\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reject, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = await start_relay(upstream="simulator", upstream_url=f"wss://127.0.0.1:{port}/v1/realtime")
    event, code = await _first_event_and_close(relay.ws_url, relay.auth)
    assert event["error"]["code"] in ("upstream_tls_error", "upstream_unreachable")
    assert code in (1011, 1013)
    server.close()


async def test_one_failing_session_leaves_others_untouched(start_relay: RelayFactory) -> None:
    upstream = await ScriptedUpstream().start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url)
    async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as healthy:
        await healthy.recv()
        await upstream.connected.wait()
        # Kill a second session's upstream abruptly; the first must carry on.
        async with websockets.connect(relay.ws_url, additional_headers=relay.auth) as doomed:
            await doomed.recv()
            # A permanent failure (rejected key) ends that session; a transient one would be
            # replaced by the supervisor instead.
            doomed_upstream = upstream.connections[1]
            await doomed_upstream.send(
                {
                    "type": "error",
                    "event_id": "event_k",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                        "message": "Incorrect API key provided.",
                        "param": None,
                        "event_id": None,
                    },
                }
            )
            await doomed_upstream.ws.close(code=3000)
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(doomed.recv(), 10)
        await healthy.send('{"type":"input_audio_buffer.clear"}')
        await asyncio.sleep(0.2)
    assert upstream.connections[0].received == [b'{"type":"input_audio_buffer.clear"}']
    await upstream.close()


async def test_readiness_reports_an_unreachable_upstream_for_a_while(start_relay: RelayFactory) -> None:
    import aiohttp

    from relay.io.handler import RELAY_CONTEXT

    relay = await start_relay(upstream="simulator", upstream_url=f"ws://127.0.0.1:{_free_port()}/v1/realtime")
    await _first_event_and_close(relay.ws_url, relay.auth)
    async with aiohttp.ClientSession() as http:
        async with http.get(relay.http_url + "/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["status"] == "upstream_unreachable"
        relay.app[RELAY_CONTEXT].upstream_unreachable_until = 0.0  # as if the window had passed
        async with http.get(relay.http_url + "/readyz") as resp:
            assert resp.status == 200
