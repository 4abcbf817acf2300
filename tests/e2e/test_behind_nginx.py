"""The relay behind a real nginx, configured by the shipped deploy/nginx/relay.conf.

Production puts a reverse proxy in front (TLS, an ingress); every connection then comes from the
proxy. A voice session must go through it untouched, an app whose connection drops must come back
to its conversation through it, and the relay's per-address limit on failed
authentications must count the clients behind it (``RELAY_TRUSTED_PROXIES``), not nginx, or one
client guessing tokens gets every user refused. Clients here connect from distinct loopback
addresses (127.0.0.2, 127.0.0.3), which nginx appends to ``X-Forwarded-For``.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory, RelayHandle
from tests.support.relay_process import free_port
from tests.support.speech import speech_pcm16
from tests.support.system import require_binary

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "relay.conf"
ATTACKER, USER = "127.0.0.2", "127.0.0.3"

Proxied = Callable[..., Awaitable[tuple[RelayHandle, str]]]


def nginx_conf(relay_port: int, port: int, workdir: Path) -> str:
    """The shipped file as it is, pointed at this relay and listening on loopback."""
    shipped = SHIPPED.read_text()
    assert "server 127.0.0.1:8080;" in shipped
    assert "listen 80;" in shipped
    site = shipped.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{relay_port};").replace(
        "listen 80;", f"listen 127.0.0.1:{port};"
    )
    temp = " ".join(
        f"{kind}_temp_path {workdir}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"worker_processes 1; pid {workdir}/nginx.pid; error_log {workdir}/error.log warn;\n"
        f"events {{ worker_connections 256; }}\nhttp {{ access_log off; {temp}\n{site}\n}}\n"
    )


@pytest.fixture
async def behind_nginx(start_relay: RelayFactory, tmp_path: Path) -> AsyncIterator[Proxied]:
    binary = require_binary("nginx", package="nginx")
    # The live API's timing (sessions announced ~0.3 s after the upgrade, answers streamed at
    # its pace, here 20x): a resume lands while the answer still streams.
    reply = " ".join(f"word{i}" for i in range(60))
    runner, sim_port = await start_simulator(
        SimulatorConfig(timing=Timing.realistic(), speed=20.0, reply_text=reply)
    )
    procs: list[subprocess.Popen[bytes]] = []

    async def start(**overrides: Any) -> tuple[RelayHandle, str]:
        relay = await start_relay(
            upstream="simulator", upstream_url=f"ws://127.0.0.1:{sim_port}/v1/realtime", **overrides
        )
        port, workdir = free_port(), tmp_path / f"nginx{len(procs)}"
        workdir.mkdir()
        conf = workdir / "nginx.conf"
        conf.write_text(nginx_conf(relay.server.port, port, workdir))
        proc = subprocess.Popen(
            [binary, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "nginx did not start listening"
                await asyncio.sleep(0.05)
        return relay, f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)
    await runner.cleanup()


def client_from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def upgrade_status(url: str, address: str, token: str, headers: dict[str, str] | None = None) -> int:
    async with client_from(address) as http:
        try:
            async with http.ws_connect(url, headers={"Authorization": f"Bearer {token}", **(headers or {})}):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_a_voice_session_goes_through_nginx_untouched(behind_nginx: Proxied) -> None:
    relay, url = await behind_nginx(trusted_proxies=["127.0.0.1"])
    audio = base64.b64encode(speech_pcm16("Hello through the proxy.")[: 960 * 25]).decode()
    async with client_from(USER) as http, http.ws_connect(url, headers=relay.auth) as ws:
        first = orjson.loads((await ws.receive(timeout=10)).data)
        assert first["type"] == "session.created"
        await ws.send_str(
            '{"type":"session.update","session":{"type":"realtime","audio":{"input":{"turn_detection":null}}}}'
        )
        for n in range(0, len(audio), 1280):
            await ws.send_str(
                orjson.dumps({"type": "input_audio_buffer.append", "audio": audio[n : n + 1280]}).decode()
            )
        await ws.send_str('{"type":"input_audio_buffer.commit"}')
        await ws.send_str('{"type":"response.create","event_id":"ask"}')
        seen: list[str] = []
        while "response.done" not in seen:
            seen.append(orjson.loads((await ws.receive(timeout=10)).data)["type"])
        assert "error" not in seen
        assert {"input_audio_buffer.committed", "response.output_audio.delta"} <= set(seen)
    appended = relay.metric(
        "relay_frames_total", {"direction": "client_to_upstream", "type": "input_audio_buffer.append"}
    )
    assert appended == len(range(0, len(audio), 1280))  # every append arrived, through the proxy


@pytest.mark.parametrize("trusted", [True, False])
async def test_one_client_guessing_tokens_does_not_lock_out_the_others(
    behind_nginx: Proxied, trusted: bool
) -> None:
    relay, url = await behind_nginx(
        trusted_proxies=["127.0.0.1"] if trusted else [], auth_failures_per_s=0.01, auth_failure_burst=3
    )
    assert [await upgrade_status(url, ATTACKER, "wrong-token") for _ in range(3)] == [401] * 3
    assert await upgrade_status(url, ATTACKER, "wrong-token") == 429
    # The attacker cannot pass for someone else: its own address is the hop nginx appended.
    assert await upgrade_status(url, ATTACKER, relay.token, {"X-Forwarded-For": USER}) == 429
    if trusted:
        assert await upgrade_status(url, USER, relay.token) == 101
    else:  # without the setting every client is nginx's address: why the setting exists
        assert await upgrade_status(url, USER, relay.token) == 429


async def test_an_app_whose_connection_drops_resumes_through_nginx(behind_nginx: Proxied) -> None:
    """The resume token in the 101's headers, and the resume's own headers, pass through the
    proxy; a drop between the app and nginx reaches the relay as a lost client, not an ending."""
    relay, url = await behind_nginx(trusted_proxies=["127.0.0.1"])
    app = await websockets.connect(url, additional_headers=relay.auth, max_size=None)
    assert app.response is not None
    token = app.response.headers["X-Relay-Resume-Token"]
    assert orjson.loads(await app.recv())["type"] == "session.created"
    await app.send(
        '{"type":"conversation.item.create","item":{"type":"message","role":"user",'
        '"content":[{"type":"input_text","text":"Say something."}]}}'
    )
    await app.send('{"type":"response.create"}')
    heard = [orjson.loads(await app.recv())]
    while heard[-1]["type"] != "response.created":
        heard.append(orjson.loads(await app.recv()))
    app.transport.abort()  # the network goes: no close frame, to nginx or beyond
    headers = {**relay.auth, "X-Relay-Resume-Token": token, "X-Relay-Last-Event-Id": heard[-1]["event_id"]}
    async with asyncio.timeout(20):
        back = await websockets.connect(url, additional_headers=headers, max_size=None)
        rest = [orjson.loads(await back.recv())]
        while rest[-1]["type"] != "response.done":
            rest.append(orjson.loads(await back.recv()))
    await back.close()
    types = [event["type"] for event in rest]
    assert "session.created" not in types  # the same conversation, not a new one
    assert "response.created" not in types  # nothing it had processed came again
    assert "response.output_audio.delta" in types
    assert rest[-1]["response"]["status"] == "completed"
    assert relay.metric("relay_resumes_total", {"result": "ok"}) == 1


async def test_the_site_serves_health_but_not_metrics(behind_nginx: Proxied) -> None:
    relay, url = await behind_nginx(trusted_proxies=["127.0.0.1"])
    base = url.replace("ws://", "http://").split("/v1/")[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as health:
            assert health.status == 200
        async with http.get(f"{base}/metrics") as metrics:
            assert metrics.status == 404
        async with http.get(f"{relay.http_url}/metrics") as direct:  # where Prometheus scrapes
            assert direct.status == 200
