"""The README's run command (scripts/run.sh) and ``relay simulate``, started as a newcomer would."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import websockets
from openai import AsyncOpenAI

from tests.support.relay_process import clean_env, free_port, wait_listening

ROOT = Path(__file__).resolve().parents[1]


async def test_run_script_starts_the_relay_on_the_simulator() -> None:
    port = free_port()
    venv = Path(sys.executable).parent.parent
    env = clean_env(RELAY_PORT=str(port))
    # The install step is already satisfied by the running venv: mark it installed.
    (venv / ".installed").touch(exist_ok=True)
    env["VENV"] = str(venv)
    proc = subprocess.Popen(
        ["scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        await wait_listening(port, proc)
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime") as ws:
            assert orjson.loads(await ws.recv())["type"] == "session.created"
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200
            assert "relay voice console" in await resp.text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert b"embedded simulator" in err


async def test_relay_simulate_runs_standalone_for_the_sdk() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "simulate", "--port", str(port), "--speed", "50"],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_listening(port, proc)
        client = AsyncOpenAI(api_key="any-key", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await conn.response.create()
            async for event in conn:
                if event.type == "response.done":
                    assert event.response.status == "completed"
                    break
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 15)
