"""The processes the benchmark measures: the relay and nginx, pinned to their own core."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

TOKEN = "bench-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    port: int

    async def metrics(self) -> str:
        """Its ``/metrics`` exposition (a relay's)."""
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
            return await resp.text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _family(pid: int) -> list[Any]:
    """A server's process and its children (nginx works in its worker)."""
    import psutil

    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def cpu_times(pid: int) -> tuple[float, float]:
    """A server's user and kernel CPU seconds so far, its children's included."""
    user = system = 0.0
    for proc in _family(pid):
        times = proc.cpu_times()
        user, system = user + times.user, system + times.system
    return user, system


def minor_faults(pid: int) -> int:
    """A server's minor page faults so far, its children's included (``/proc/<pid>/stat``,
    field 10: psutil does not give them)."""
    total = 0
    for proc in _family(pid):
        with open(f"/proc/{proc.pid}/stat", encoding="ascii") as stat:
            total += int(stat.read().rsplit(")", 1)[1].split()[7])
    return total


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples over all label sets, from an exposition's text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


async def start_relay(
    sim_port: int,
    *,
    validate: bool = True,
    rotate_after_s: float = 0,
    quiet_max_wait_s: float = 0.5,
    extra: dict[str, str] | None = None,
    cwd: str | None = None,
    event_times: str | None = None,
) -> Proc:
    """A relay on the simulator; ``cwd``: another checkout whose code runs (``python -m``
    imports from the working directory first)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "OPENAI_", "AZURE_"))}
    env.update(
        RELAY_PORT=str(port),
        RELAY_CLIENT_TOKENS=TOKEN,
        RELAY_UPSTREAM="simulator",
        RELAY_UPSTREAM_URL=f"ws://127.0.0.1:{sim_port}/v1/realtime",
        RELAY_LOG_LEVEL="WARNING",
        RELAY_VALIDATE_EVENTS="true" if validate else "false",
        RELAY_ROTATE_AFTER_S=str(rotate_after_s),
        RELAY_ROTATE_JITTER_S="0",
        RELAY_ROTATE_QUIET_MAX_WAIT_S=str(quiet_max_wait_s),
        RELAY_MAX_SESSIONS_PER_IDENTITY="5000",
        RELAY_MAX_SESSIONS="5000",
        # Every benchmark client comes from 127.0.0.1, as every client does behind a load
        # balancer: the per-address edge limits are raised as docs/operations.md says to there.
        RELAY_MAX_UNFINISHED_HEADS="5000",
        RELAY_MAX_UNFINISHED_HEADS_PER_PEER="5000",
        RELAY_AUTH_FAILURES_PER_S="0",
        # The sweep measures latency past saturation; admission control would refuse those
        # sessions (its own behaviour is tested in tests/io/test_overload.py).
        RELAY_OVERLOAD_LAG_MS="0",
    )
    env.update(extra or {})
    # BENCH_CPROFILE=file: the relay runs under cProfile (written when it exits), for exact call
    # counts per frame where py-spy and perf only sample; its overhead makes the CPU figures moot.
    profile = os.environ.get("BENCH_CPROFILE")
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    # event_times (or BENCH_EVENT_TIMES=file): each full-path event timed in place (bench/event_times.py).
    event_times = event_times or os.environ.get("BENCH_EVENT_TIMES")
    command = ["-m", "bench.event_times", "--serve", event_times] if event_times else ["-m", "relay", "serve"]
    return await _launch([*pin(0), sys.executable, *prof, *command], port, env, cwd)


async def start_floor(sim_port: int) -> Proc:
    """The forward-only relay (``bench/floor.py``), pinned as the relay is."""
    port = free_port()
    upstream = f"ws://127.0.0.1:{sim_port}/v1/realtime"
    return await _launch([*pin(0), sys.executable, "-m", "bench.floor", str(port), upstream], port)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


async def start_nginx(sim_port: int, workdir: Path) -> Proc | None:
    binary = nginx_binary()
    if binary is None:
        return None
    port = free_port()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(port=port, upstream=sim_port, dir=workdir))
    return await _launch([*pin(0), binary, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"], port)


async def _launch(
    cmd: list[str], port: int, env: dict[str, str] | None = None, cwd: str | None = None
) -> Proc:
    """A server process, quiet, once it listens on ``port``."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await _wait_port(port, proc)
    return Proc(proc, port)


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://127.0.0.1:{upstream};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
      proxy_buffering off;
    }}
  }}
}}
"""


async def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


# ---------------------------------------------------------------------------------- runs
