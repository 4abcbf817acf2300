"""The provider key never reaches a client, a log line, a metric or an error message.

The relay runs as a process with a provider key and DEBUG logs; an upstream that quotes the key
back (as the API's invalid_api_key message does) is behind it. Everything the run produced is
scanned for the key and for fragments of it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import aiohttp
import orjson
import websockets
from websockets.exceptions import ConnectionClosed

from tests.support.relay_process import clean_env, free_port, wait_listening
from tests.support.scripted_upstream import ScriptedConnection, ScriptedUpstream

PROVIDER_KEY = "sk-proj-SECRETkey0123456789abcdefghijklmnop"
CLIENT_TOKEN = "client-token-SECRET-9876543210"


async def _quote_key(conn: ScriptedConnection, data: bytes) -> None:
    """Answer any response.create with the API's bad-key error, key fragment included."""
    if b"response.create" in data:
        await conn.send(
            {
                "type": "error",
                "event_id": "event_1",
                "error": {
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "message": f"Incorrect API key provided: "
                    f"{PROVIDER_KEY[:8]}***{PROVIDER_KEY[-4:]}. "
                    f"Full: {PROVIDER_KEY}",
                    "param": None,
                    "event_id": None,
                },
            }
        )
        await conn.ws.close(code=3000, message=b"invalid_request_error.invalid_api_key")


async def test_provider_key_never_leaks() -> None:
    upstream = await ScriptedUpstream(_quote_key).start()
    port = free_port()
    env = clean_env(
        OPENAI_API_KEY=PROVIDER_KEY,
        RELAY_UPSTREAM="openai",
        RELAY_UPSTREAM_URL=upstream.url,
        RELAY_PORT=str(port),
        RELAY_CLIENT_TOKENS=CLIENT_TOKEN,
        RELAY_LOG_LEVEL="DEBUG",
        RELAY_DRAIN_GRACE_S="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    produced: list[bytes] = []
    try:
        await wait_listening(port, proc)
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send("{not json")
            await ws.send('{"type":"session.update","session":{"type":"realtime","bogus":1}}')
            await ws.send('{"type":"response.create"}')
            try:
                while True:
                    produced.append(await asyncio.wait_for(ws.recv(decode=False), 10))
            except ConnectionClosed:
                pass
            produced.append(repr((ws.close_code, ws.close_reason)).encode())
        assert upstream.connections[0].request_headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
        async with aiohttp.ClientSession() as http:
            for path in ("/metrics", "/healthz", "/readyz", "/v1/realtime"):
                async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                    produced.append(await resp.read())
                    produced.append(repr(dict(resp.headers)).encode())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        await upstream.close()
    produced += [out, err]
    blob = b"\n".join(produced)
    assert b"session.created" in blob
    assert b"event_rejected" in blob
    for fragment in (PROVIDER_KEY, PROVIDER_KEY[-12:], PROVIDER_KEY[8:20], CLIENT_TOKEN):
        assert fragment.encode() not in blob, f"{fragment!r} leaked"
    assert orjson.loads(blob.split(b"\n")[0])  # client frames are JSON
