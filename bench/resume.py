"""Client resume and moving conversations between processes, with the live API's timing.

``python -m bench.resume`` (also part of ``make bench``). Against the simulator's realistic
profile (speed 1): every conversation asks for a spoken answer, its TCP connection is cut as the
answer starts, the answer finishes into the relay's buffer, and the client resumes with the last
event it processed. Measured:

- same process: from the resumed upgrade's completion to the first buffered event;
- takeover on another process (two relays, a real ``redis-server``): the upgrade itself (the
  owner is asked to let go first) and from its completion to the first buffered event;
- for both: events lost (the answer's transcript is not whole) and duplicated (an event id twice);
- a drain: ``SIGTERM`` to a replica holding N conversations; each client resumes on the other as
  soon as it is closed with 1012; time until all have resumed, and whether each goes on;
- what Redis costs an attached session: Redis commands per session-second and the relay's CPU
  per relayed frame with and without ``RELAY_REDIS_URL``, open microphones streaming.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
import websockets

from bench.load import Stamps
from bench.real_conditions import _apps, _close, _stream, open_mic
from bench.servers import TOKEN, Proc, free_port, start_relay
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing

ANSWER = " ".join(f"word{i}" for i in range(12))  # about 5 s of speech at the live pace
_AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ---------------------------------------------------------------------- helpers
class Client:
    """A websockets client that records every event with its arrival time."""

    def __init__(self, ws: websockets.ClientConnection, opened_at: float) -> None:
        self.ws = ws
        self.opened_at = opened_at
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int, headers: dict[str, str] | None = None) -> Client:
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime&relay_resume=1"
        ws = await websockets.connect(url, additional_headers={**_AUTH, **(headers or {})}, max_size=None)
        return cls(ws, time.perf_counter())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.events.append((time.perf_counter(), orjson.loads(message)))
                self.changed.set()
        except websockets.ConnectionClosed:
            pass
        self.changed.set()

    async def wait_for(self, kind: str, after: int = 0, timeout: float = 60) -> int:
        async with asyncio.timeout(timeout):
            while True:
                for index in range(after, len(self.events)):
                    if self.events[index][1].get("type") == kind:
                        return index
                if self.reader.done():
                    raise ConnectionError(f"closed before {kind}")
                self.changed.clear()
                await self.changed.wait()

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(event).decode())

    async def ask(self, text: str) -> None:
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        await self.send({"type": "conversation.item.create", "item": item})
        await self.send({"type": "response.create"})

    def token(self) -> str:
        return str(
            next(e for _, e in reversed(self.events) if e["type"] == "relay.session_resumable")[
                "resume_token"
            ]
        )

    def shown(self, upto: int | None = None) -> list[dict[str, Any]]:
        return [e for _, e in self.events[:upto] if e["type"] != "relay.session_resumable"]

    def cut(self) -> None:
        self.ws.transport.abort()


async def _cut_mid_answer(port: int) -> tuple[Client, int]:
    """A conversation whose network goes as its answer starts: the client and how many events it
    had processed."""
    client = await Client.connect(port)
    await client.wait_for("session.created")
    mark = len(client.events)
    await client.ask("tell me something")
    await client.wait_for("response.output_audio_transcript.delta", after=mark)
    processed = len(client.events)
    client.cut()
    await client.reader
    return client, processed


async def _resume(client: Client, processed: int, port: int) -> dict[str, Any]:
    """Resume after the answer finished into the buffer; the figures and the checks."""
    seen = client.shown(processed)
    started = time.perf_counter()
    headers = {"X-Relay-Resume-Token": client.token(), "X-Relay-Last-Event-Id": str(seen[-1]["event_id"])}
    resumed = await Client.connect(port, headers)
    done_at = await resumed.wait_for("response.done")
    status = resumed.events[done_at][1]["response"]["status"]
    first = resumed.events[0][0]
    events = seen + resumed.shown()
    ids = [e.get("event_id") for e in events]
    transcript = "".join(
        str(e.get("delta")) for e in events if e["type"] == "response.output_audio_transcript.delta"
    )
    result = {
        "upgrade_ms": (resumed.opened_at - started) * 1000,
        "first_event_ms": (first - resumed.opened_at) * 1000,
        "duplicated": len(ids) - len(set(ids)),
        # Lost: a gap in what the client heard. A takeover that cuts a streaming answer (by
        # design: it cannot carry on elsewhere) leaves a prefix, closed by one response.done.
        "lost": 0
        if ANSWER.startswith(transcript.strip()) and (status != "completed" or transcript.strip() == ANSWER)
        else 1,
        "status": status,
    }
    await resumed.ws.close()
    return result


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def q(key: str, p: float) -> float:
        return float(np.percentile([r[key] for r in rows], p)) if rows else math.nan

    return {
        "conversations": len(rows),
        "upgrade_p50_ms": q("upgrade_ms", 50),
        "upgrade_max_ms": q("upgrade_ms", 100),
        "first_event_p50_ms": q("first_event_ms", 50),
        "first_event_p99_ms": q("first_event_ms", 99),
        "first_event_max_ms": q("first_event_ms", 100),
        "lost": sum(r["lost"] for r in rows),
        "duplicated": sum(r["duplicated"] for r in rows),
        "completed": sum(1 for r in rows if r["status"] == "completed"),
    }


@asynccontextmanager
async def _redis() -> AsyncIterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def _redis_commands(url: str) -> int:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"INFO stats\r\n")
    data = b""
    while b"total_commands_processed" not in data or not data.endswith(b"\r\n\r\n"):
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
        if b"total_commands_processed" in data and data.count(b"\r\n") > 5 and len(chunk) < 65536:
            break
    writer.close()
    line = next(x for x in data.decode().splitlines() if x.startswith("total_commands_processed:"))
    return int(line.split(":")[1])


def _relay_env(redis_url: str | None) -> dict[str, str]:
    env = {"RELAY_SESSION_LEASE_S": "10", "RELAY_RESUME_GRACE_S": "60"}
    if redis_url:
        env["RELAY_REDIS_URL"] = redis_url
    return env


# ---------------------------------------------------------------------- the measurements
def _sim(reply: str, speed: float, **extra: Any) -> SimulatorConfig:
    return SimulatorConfig(reply_text=reply, timing=Timing.realistic(), speed=speed, **extra)


async def same_process(conversations: int, wait_s: float, speed: float = 1.0) -> dict[str, Any]:
    runner, sim_port = await start_simulator(_sim(ANSWER, speed))
    relay = await start_relay(sim_port, extra=_relay_env(None))
    try:
        cut = await asyncio.gather(*(_cut_mid_answer(relay.port) for _ in range(conversations)))
        await asyncio.sleep(wait_s)  # the answers finish into the buffers
        rows = await asyncio.gather(*(_resume(client, n, relay.port) for client, n in cut))
    finally:
        relay.stop()
        await runner.cleanup()
    return _summary(list(rows))


async def takeover(conversations: int, wait_s: float, speed: float = 1.0) -> dict[str, Any]:
    async with _redis() as url:
        if url is None:
            return {"skipped": "redis-server not installed (apt-get install redis-server)"}
        runner, sim_port = await start_simulator(
            SimulatorConfig(reply_text=ANSWER, timing=Timing.realistic())
        )
        owner = await start_relay(sim_port, extra=_relay_env(url))
        other = await start_relay(sim_port, extra=_relay_env(url))
        try:
            cut = await asyncio.gather(*(_cut_mid_answer(owner.port) for _ in range(conversations)))
            await asyncio.sleep(wait_s)
            rows = await asyncio.gather(*(_resume(client, n, other.port) for client, n in cut))
        finally:
            owner.stop()
            other.stop()
            await runner.cleanup()
    return _summary(list(rows))


async def drain(conversations: int, speed: float = 1.0) -> dict[str, Any]:
    """SIGTERM to the replica holding every conversation; each resumes on the other at once."""
    async with _redis() as url:
        if url is None:
            return {"skipped": "redis-server not installed (apt-get install redis-server)"}
        runner, sim_port = await start_simulator(_sim("A short answer.", speed))
        leaving = await start_relay(sim_port, extra=_relay_env(url))
        staying = await start_relay(sim_port, extra=_relay_env(url))
        try:
            clients = []
            for _ in range(conversations):
                client = await Client.connect(leaving.port)
                await client.wait_for("session.created")
                clients.append(client)
            await asyncio.gather(*(c.ask("hello") for c in clients))
            await asyncio.gather(*(c.wait_for("response.done") for c in clients))
            sigterm = time.perf_counter()
            leaving.proc.send_signal(signal.SIGTERM)

            async def move(client: Client) -> tuple[float, bool, int | None]:
                await client.reader
                code = client.ws.close_code
                last = client.shown()[-1]["event_id"]
                headers = {"X-Relay-Resume-Token": client.token(), "X-Relay-Last-Event-Id": str(last)}
                resumed = await Client.connect(staying.port, headers)
                at = resumed.opened_at - sigterm
                await resumed.ask("and then?")
                try:
                    await resumed.wait_for("response.done", timeout=30)
                    ok = True
                except (TimeoutError, ConnectionError):
                    ok = False
                await resumed.ws.close()
                return at, ok, code

            moved = await asyncio.gather(*(move(c) for c in clients), return_exceptions=True)
        finally:
            leaving.stop()
            staying.stop()
            await runner.cleanup()
    done = [m for m in moved if isinstance(m, tuple)]
    return {
        "conversations": conversations,
        "resumed": len(done),
        "went_on": sum(1 for _, ok, _ in done if ok),
        "closed_1012": sum(1 for _, _, code in done if code == 1012),
        "all_resumed_after_s": max((at for at, _, _ in done), default=math.nan),
        "failures": [repr(m) for m in moved if not isinstance(m, tuple)][:3],
    }


async def redis_cost(sessions: int, seconds: float, trials: int) -> dict[str, Any]:
    """Attached open microphones with and without Redis: CPU per relayed append, Redis commands."""
    import psutil

    async with _redis() as url:
        if url is None:
            return {"skipped": "redis-server not installed (apt-get install redis-server)"}
        rows: dict[str, list[float]] = {"without": [], "with": []}
        commands: list[float] = []
        for trial in range(trials):
            # Interleaved, the order swapped each trial: the machine's drift favours neither.
            for variant in ("without", "with") if trial % 2 == 0 else ("with", "without"):
                stamps = Stamps()
                config = _sim("Sure.", 1.0, probe=stamps.probe)
                runner, sim_port = await start_simulator(config)
                relay: Proc = await start_relay(
                    sim_port, extra=_relay_env(url if variant == "with" else None)
                )
                process = psutil.Process(relay.proc.pid)
                try:
                    apps = await _apps(
                        f"ws://127.0.0.1:{relay.port}/v1/realtime?model=gpt-realtime", stamps, sessions
                    )
                    before_cmds = await _redis_commands(url)
                    before = process.cpu_times()
                    await _stream(apps, stamps, open_mic(), seconds, f"{variant}{trial}.")
                    after = process.cpu_times()
                    after_cmds = await _redis_commands(url)
                    await _close(apps)
                finally:
                    relay.stop()
                    await runner.cleanup()
                cpu = (after.user + after.system) - (before.user + before.system)
                appends = len(stamps.latencies("c2u"))
                rows[variant].append(cpu / max(1, appends) * 1e6)
                if variant == "with":
                    commands.append((after_cmds - before_cmds) / (sessions * seconds))
    return {
        "sessions": sessions,
        "seconds": seconds,
        "cpu_us_per_append_without": rows["without"],
        "cpu_us_per_append_with": rows["with"],
        "redis_commands_per_session_second": commands,
    }


async def run_all(
    conversations: int = 20,
    drained: int = 100,
    cost_sessions: int = 20,
    cost_seconds: float = 15.0,
    trials: int = 2,
    speed: float = 1.0,
) -> dict[str, Any]:
    wait_s = 8.0 / speed  # the answers finish (at the live API's pace) while their clients are away
    return {
        "same_process": await same_process(conversations, wait_s, speed),
        "takeover": await takeover(conversations, wait_s, speed),
        "drain": await drain(drained, speed),
        "redis_cost": await redis_cost(cost_sessions, cost_seconds, trials)
        if trials
        else {"skipped": "no trials"},
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.resume", description=__doc__)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--drained", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="5 conversations, 20 drained, 5 s of load")
    args = parser.parse_args()
    if args.quick:
        results = asyncio.run(run_all(5, 20, 20, 5.0, 1))
    else:
        results = asyncio.run(run_all(args.conversations, args.drained))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
