"""The three client examples, run against a live relay: Python SDK, Node SDK, plain browser JS."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory, RelayHandle
from tests.support.relay_process import free_port, relay_process
from tests.support.system import require_binary
from tests.support.tls import self_signed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
async def relay(start_relay: RelayFactory) -> AsyncIterator[RelayHandle]:
    runner, port = await start_simulator(
        SimulatorConfig(timing=Timing.fast(), speed=50.0, reply_text="Hello from the simulator.")
    )
    yield await start_relay(upstream="simulator", upstream_url=f"ws://127.0.0.1:{port}/v1/realtime")
    await runner.cleanup()


async def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_python_sdk_example(relay: RelayHandle) -> None:
    out = await _run(
        [sys.executable, str(EXAMPLES / "python_sdk.py")],
        {"RELAY_URL": f"ws://127.0.0.1:{relay.server.port}/v1", "RELAY_TOKEN": relay.token},
        EXAMPLES,
    )
    assert out.strip() == "Hello from the simulator."


async def test_node_sdk_example(tmp_path: Path) -> None:
    """The npm SDK always opens wss:// (buildRealtimeURL), so the relay serves TLS itself here."""
    npm = shutil.which("npm")
    node = shutil.which("node")
    if npm is None or node is None:
        pytest.skip("node and npm are not installed on this machine")
    project = EXAMPLES / "node"
    done = await asyncio.to_thread(
        subprocess.run,
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"npm ci refused: {done.stderr.strip()[-300:]}")
    cert, key = self_signed(tmp_path)
    runner, sim_port = await start_simulator(
        SimulatorConfig(timing=Timing.fast(), speed=50.0, reply_text="Hello from the simulator.")
    )
    try:
        async with relay_process(
            RELAY_UPSTREAM="simulator",
            RELAY_UPSTREAM_URL=f"ws://127.0.0.1:{sim_port}/v1/realtime",
            RELAY_TLS_CERT_FILE=str(cert),
            RELAY_TLS_KEY_FILE=str(key),
        ) as relay:
            out = await _run(
                [node, "index.mjs"],
                {
                    "RELAY_HTTP": f"https://127.0.0.1:{relay.port}/v1",
                    "RELAY_TOKEN": relay.token,
                    "NODE_EXTRA_CA_CERTS": str(cert),
                },
                project,
            )
    finally:
        await runner.cleanup()
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"status": "completed", "text": "Hello from the simulator."}


@pytest.mark.slow
async def test_plain_browser_example(relay: RelayHandle) -> None:
    chromium = require_binary("chromium", package="chromium")
    from playwright.async_api import async_playwright, expect

    app = web.Application()
    app.router.add_static("/", EXAMPLES / "browser")
    pages = TestServer(app, host="127.0.0.1")
    await pages.start_server()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
            )
            page = await browser.new_page()
            query = f"?relay=ws://127.0.0.1:{relay.server.port}&token={relay.token}"
            await page.goto(f"http://127.0.0.1:{pages.port}/index.html{query}")
            await expect(page.locator("#out")).to_have_text("done: Hello from the simulator.", timeout=20_000)
            await browser.close()
    finally:
        await pages.close()


async def test_python_transcription_example(relay: RelayHandle, tmp_path: Path) -> None:
    """The official SDK's transcription session (intent=transcription, no model) through the relay."""
    import wave

    from relay.simulator.audio import synthesize

    paths = []
    for n, text in enumerate(("Turn on the lights.", "Thank you.")):
        path = tmp_path / f"utterance{n}.wav"
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(24000)
            wav.writeframes(synthesize(text, "pcm16"))
        paths.append(str(path))
    out = await _run(
        [sys.executable, str(EXAMPLES / "transcription_python.py"), *paths],
        {"RELAY_URL": f"ws://127.0.0.1:{relay.server.port}/v1", "RELAY_TOKEN": relay.token},
        EXAMPLES,
    )
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("item_") and line.endswith(": Hello there.") for line in lines)


@pytest.mark.slow
async def test_browser_live_captions_example(relay: RelayHandle, tmp_path: Path) -> None:
    """examples/browser/transcription.html: a real microphone (Chromium's fake capture device
    playing speech), an AudioWorklet to 24 kHz PCM16, server VAD, captions per utterance."""
    chromium = require_binary("chromium", package="chromium")
    from playwright.async_api import async_playwright, expect

    from tests.e2e.test_browser import CHROMIUM_ARGS, _microphone_wav

    wav = _microphone_wav(tmp_path)
    app = web.Application()
    app.router.add_static("/", EXAMPLES / "browser")
    pages = TestServer(app, host="127.0.0.1")
    await pages.start_server()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium, args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
            )
            page = await browser.new_page()
            query = f"?relay=ws://127.0.0.1:{relay.server.port}&token={relay.token}"
            await page.goto(f"http://127.0.0.1:{pages.port}/transcription.html{query}")
            await page.locator("#start").click()
            await expect(page.locator("#status")).to_have_text("listening", timeout=10_000)
            caption = page.locator("#captions li[data-done=true]").first
            await expect(caption).to_have_text("Hello there.", timeout=30_000)  # the simulator's transcript
            await browser.close()
    finally:
        await pages.close()


async def test_phone_calls_example(start_relay: RelayFactory) -> None:
    """The phone agent's server: a signed webhook in, the accept and the control socket through
    the relay, a greeting on the line, a hang-up when the caller says goodbye."""
    runner, sim_port = await start_simulator(SimulatorConfig(timing=Timing.fast(), speed=20.0))
    relay = await start_relay(upstream="simulator", upstream_url=f"ws://127.0.0.1:{sim_port}/v1/realtime")
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    port = free_port()
    env = {"RELAY_URL": relay.http_url, "RELAY_TOKEN": relay.token, "OPENAI_WEBHOOK_SECRET": secret}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "phone_calls.py"), "--port", str(port),
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    sim = f"http://127.0.0.1:{sim_port}"
    try:
        assert proc.stdout is not None
        assert b"listening" in await asyncio.wait_for(proc.stdout.readline(), 30)
        async with aiohttp.ClientSession() as http:
            async with http.post(sim + "/_sim/calls", json={"webhook_secret": secret}) as resp:
                ring = await resp.json()
            call_id = ring["call_id"]
            delivery = ring["webhook"]
            forged = {**delivery["headers"], "webhook-signature": "v1,AAAA"}
            url = f"http://127.0.0.1:{port}/webhook"
            async with http.post(url, data=delivery["body"], headers=forged) as resp:
                assert resp.status == 400  # the example checks the signature
            async with http.post(url, data=delivery["body"], headers=delivery["headers"]) as resp:
                assert resp.status == 200

            async def state() -> dict[str, object]:
                async with http.get(f"{sim}/_sim/calls/{call_id}") as resp:
                    return dict(await resp.json())

            async with asyncio.timeout(20):
                while (await state())["line"]["played_ms"] == 0:  # type: ignore[index]  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # the greeting plays to the caller
                async with http.post(f"{sim}/_sim/calls/{call_id}/caller", json={"say": "Thanks, goodbye."}):
                    pass
                while (await state())["status"] == "accepted":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            final = await state()
        assert final["ended_by"] is not None
        assert final["line"]["static_ms"] == 0  # type: ignore[index]
        assert final["config"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}  # type: ignore[index]
        assert final["config"]["tools"][0]["name"] == "end_call"  # type: ignore[index]
    finally:
        proc.terminate()
        out, err = await proc.communicate()
        await runner.cleanup()
    assert b"caller: Thanks, goodbye." in out, err.decode()
    assert b"hung up: 200" in out
