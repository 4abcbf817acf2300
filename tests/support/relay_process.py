"""Run ``relay serve`` as a separate process, the way users and the image run it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

TOKEN = "process-token-abcdefghijklmnop"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "OPENAI_", "AZURE_"))}
    env.update(extra)
    return env


@dataclass
class RelayProcess:
    proc: subprocess.Popen[bytes]
    port: int
    token: str = TOKEN

    scheme: str = "ws"

    @property
    def ws_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/v1/realtime?model=gpt-realtime"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"relay exited with {proc.returncode}: {err[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("relay did not start listening")


@asynccontextmanager
async def relay_process(**env: str) -> AsyncIterator[RelayProcess]:
    """A relay process on a free port; extra settings as RELAY_* environment variables."""
    async with relay_processes(1, **env) as (relay,):
        yield relay


@asynccontextmanager
async def relay_processes(count: int, **env: str) -> AsyncIterator[list[RelayProcess]]:
    """``count`` relay processes with the same settings, started side by side (a start is mostly
    imports: one core each)."""
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    for _ in range(count):
        port = free_port()
        full_env = clean_env(**{"RELAY_PORT": str(port), "RELAY_CLIENT_TOKENS": TOKEN, **env})
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve"],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append((proc, port))
    try:
        await asyncio.gather(*(wait_listening(port, proc) for proc, port in started))
        scheme = "wss" if "RELAY_TLS_CERT_FILE" in env else "ws"
        yield [RelayProcess(proc, port, scheme=scheme) for proc, port in started]
    finally:
        await asyncio.gather(*(_stop(proc) for proc, _ in started))


async def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
