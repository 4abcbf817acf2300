"""The relay as its users start it: ``relay serve`` in a process, drained by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.support.relay_process import clean_env, free_port, wait_listening

TOKEN = "cli-test-token-abcdefghijklmnop"


@pytest.fixture
def relay_process() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = clean_env(
        RELAY_PORT=str(port),
        RELAY_CLIENT_TOKENS=TOKEN,
        RELAY_DRAIN_GRACE_S="1.5",
        RELAY_SIMULATOR_SPEED="20",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        asyncio.run(wait_listening(port, proc))
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_refuses_to_start_as_an_open_proxy() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve"],
        env=clean_env(RELAY_HOST="0.0.0.0"),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert b"no client authentication is configured" in done.stderr


async def test_sigterm_drains_then_closes_1012(
    relay_process: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = relay_process
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        created = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert created["type"] == "session.created"
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 503  # readiness flips while the session still runs
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
        await ws.send('{"type":"input_audio_buffer.clear"}')  # still served during the grace
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1012  # service restart: the SDKs reconnect on it
    assert await asyncio.to_thread(proc.wait, 20) == 0
    assert proc.stderr is not None
    assert b"embedded simulator" in proc.stderr.read()


def test_relay_bench_passes_every_option_to_the_benchmark() -> None:
    """``relay bench --quick`` must reach the benchmark's own parser, options first included."""
    done = subprocess.run(
        [sys.executable, "-m", "relay", "bench", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: relay bench")
    assert "--quick" in done.stdout
    assert "--sweep" in done.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "relay", "bench", "--no-such-flag"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert "relay bench: error: unrecognized arguments: --no-such-flag" in refused.stderr


async def _start_and_stop(**env: str) -> bytes:
    """Start ``relay serve``, wait until it listens, stop it; its stderr."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"],
        env=clean_env(RELAY_PORT=str(port), **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_listening(port, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    return err


async def test_an_empty_provider_key_means_the_simulator() -> None:
    """deploy/docker-compose.yml passes ``OPENAI_API_KEY: ${OPENAI_API_KEY:-}``: empty, not unset."""
    err = await _start_and_stop(RELAY_CLIENT_TOKENS=TOKEN, OPENAI_API_KEY="", AZURE_OPENAI_ENDPOINT="")
    assert b"upstream: the embedded simulator" in err
    assert b"conversations: in this process (resume on it only)" in err


def test_an_empty_jwt_secret_is_no_authentication() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve"],
        env=clean_env(RELAY_JWT_SECRET=""),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert b"no client authentication is configured" in done.stderr


async def test_jwt_without_an_audience_is_warned_about_at_start_up() -> None:
    err = await _start_and_stop(RELAY_JWT_SECRET="s" * 32)
    assert b"jwt_audience_not_set" in err
    assert b'"level": "warning"' in err
    err = await _start_and_stop(RELAY_JWT_SECRET="s" * 32, RELAY_JWT_AUDIENCE="relay")
    assert b"jwt_audience_not_set" not in err


def test_settings_errors_and_the_start_up_line_never_print_a_secret(tmp_path: object) -> None:
    """A mistyped setting name used to print the value given (a provider key), and the upstream
    URL was printed verbatim (Azure's ?api-key= form)."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\nopenai_api_keyy = "sk-proj-SECRETSECRETSECRET"\n')
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        env=clean_env(RELAY_CLIENT_TOKENS=TOKEN),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert b"openai_api_keyy" in done.stderr  # what is wrong is still said
    assert b"SECRET" not in done.stderr
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"],
        env=clean_env(
            RELAY_PORT=str(port),
            RELAY_CLIENT_TOKENS=TOKEN,
            RELAY_UPSTREAM="azure",
            RELAY_UPSTREAM_URL="wss://example.invalid/openai/realtime?api-key=azure-SECRET-KEY&deployment=d",
            AZURE_OPENAI_ENDPOINT="https://example.invalid",
            AZURE_OPENAI_API_KEY="azure-SECRET-KEY",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        asyncio.run(wait_listening(port, proc))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert b"upstream: wss://example.invalid/openai/realtime?" in err
    assert b"SECRET" not in err
