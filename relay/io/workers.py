"""``relay serve --workers N``: N worker processes on one port, as one server.

A relay process runs on one core. To use several on one host, the parent process starts N
workers that each bind the same port with ``SO_REUSEPORT`` (the kernel spreads new connections
across them) and restarts any that dies. What makes them one server, through a private directory
of Unix sockets the parent creates:

- **Session caps across workers**: the parent holds the count (``slots.sock``); a worker asks it
  at each upgrade (one local round trip) and tells it when a session ends; a worker that dies
  frees its sessions' slots with its connection.
- **One /metrics**: each worker serves its own exposition on ``worker-<i>.sock``; whichever
  worker a scrape reaches merges all of them (``relay.observability.merge``).
- A client's resume may reach any worker: with ``RELAY_REDIS_URL`` the conversation is taken
  over there (``relay.io.session_store``); without it, only the worker that holds it can resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from relay.io.registry import CapacityExceeded, SessionRegistry
from relay.observability.logging import get_logger
from relay.observability.merge import merge_expositions
from relay.settings import Settings

WORKER_INDEX_ENV = "RELAY_WORKER_INDEX"
WORKER_DIR_ENV = "RELAY_WORKER_DIR"
SLOTS_SOCKET = "slots.sock"
RESTART_DELAY_S = 1.0
SCRAPE_TIMEOUT_S = 2.0

_log = get_logger()


# ---------------------------------------------------------------------- the parent process
async def run_workers(settings: Settings, argv: Sequence[str]) -> int:
    """Start ``settings.workers`` workers and keep them running until SIGTERM/SIGINT, which is
    passed on to each (they drain as a single process does) before the parent exits."""
    directory = Path(tempfile.mkdtemp(prefix="relay-workers-"))
    slots = SlotServer(settings)
    server = await asyncio.start_unix_server(slots.serve, path=str(directory / SLOTS_SOCKET))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    workers: dict[int, asyncio.subprocess.Process] = {}

    async def spawn(index: int) -> None:
        env = {
            **os.environ,
            WORKER_INDEX_ENV: str(index),
            WORKER_DIR_ENV: str(directory),
            "RELAY_WORKERS": str(settings.workers),  # each knows how many siblings to scrape
        }
        workers[index] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay", "serve", *argv, env=env
        )

    async def keep(index: int) -> None:
        while not stopping.is_set():
            await spawn(index)
            code = await workers[index].wait()
            if stopping.is_set():
                return
            _log.error("worker_exited", worker=index, code=code, restart_in_s=RESTART_DELAY_S)
            await asyncio.sleep(RESTART_DELAY_S)

    _log.info("workers_starting", workers=settings.workers, port=settings.port)
    keepers = [asyncio.create_task(keep(index)) for index in range(settings.workers)]
    await stopping.wait()
    _log.info("workers_stopping", workers=len(workers))
    for process in workers.values():
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    await asyncio.gather(*(process.wait() for process in workers.values()))
    for task in keepers:
        task.cancel()
    await asyncio.gather(*keepers, return_exceptions=True)
    server.close()
    shutil.rmtree(directory, ignore_errors=True)
    return 0


class SlotServer:
    """The session caps of every worker together; a worker's slots die with its connection."""

    def __init__(self, settings: Settings) -> None:
        self.registry = SessionRegistry(
            settings.max_sessions, settings.max_sessions_per_identity, settings.max_sessions_per_token
        )

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: Counter[str] = Counter()
        try:
            while line := await reader.readline():
                request = orjson.loads(line)
                key = str(request["key"])
                if request["op"] == "release":
                    if held[key] > 0:
                        held[key] -= 1
                        self.registry.release(key)
                    continue
                try:
                    self.registry.reserve_slot(str(request["kind"]), key, int(request.get("spare", 0)))
                except CapacityExceeded as exc:
                    writer.write(orjson.dumps({"reason": exc.reason, "message": exc.message}) + b"\n")
                    continue
                held[key] += 1
                writer.write(b'{"ok":true}\n')
        except (ConnectionError, ValueError, KeyError) as exc:
            _log.warning("worker_slots_connection_failed", error=repr(exc))
        finally:
            for key, count in held.items():  # a worker that is gone holds no sessions
                for _ in range(count):
                    self.registry.release(key)
            writer.close()


# ---------------------------------------------------------------------- in a worker
class SlotClient:
    """A worker's line to the parent's :class:`SlotServer` (``SharedSlots`` of the registry)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._waiting: deque[asyncio.Future[CapacityExceeded | None]] = deque()
        self._broken = False
        self._task = asyncio.create_task(self._read(), name="worker slots")

    @classmethod
    async def connect(cls, directory: str) -> SlotClient:
        reader, writer = await asyncio.open_unix_connection(str(Path(directory) / SLOTS_SOCKET))
        return cls(reader, writer)

    async def reserve(self, kind: str, key: str, spare: int = 0) -> CapacityExceeded | None:
        if self._broken:  # the parent is gone: this worker's own caps still hold
            return None
        future: asyncio.Future[CapacityExceeded | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._writer.write(orjson.dumps({"op": "reserve", "kind": kind, "key": key, "spare": spare}) + b"\n")
        return await future

    def release(self, key: str) -> None:
        if not self._broken:
            self._writer.write(orjson.dumps({"op": "release", "key": key}) + b"\n")

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                answer = orjson.loads(line)
                future = self._waiting.popleft()
                if not future.done():
                    ok = answer.get("ok")
                    future.set_result(None if ok else CapacityExceeded(answer["reason"], answer["message"]))
        except (ConnectionError, ValueError, IndexError) as exc:
            _log.warning("worker_slots_lost", error=repr(exc))
        self._broken = True
        _log.warning("worker_slots_lost", detail="the caps across workers no longer hold; each worker's do")
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._writer.close()


async def serve_own_metrics(
    directory: str, index: str, render: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.AppRunner:
    """This worker's exposition on ``worker-<index>.sock``, for the worker a scrape reaches."""
    path = Path(directory) / f"worker-{index}.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by this worker's predecessor
    app = web.Application()
    app.router.add_get("/metrics", render)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


async def all_workers_metrics(directory: str, workers: int) -> bytes:
    """Every worker's exposition, merged; a worker that does not answer (restarting) is left out
    and shows in ``relay_workers``."""
    sockets = [Path(directory) / f"worker-{index}.sock" for index in range(workers)]
    texts = await asyncio.gather(*(_scrape(path) for path in sockets))
    return merge_expositions(text for text in texts if text is not None)


async def _scrape(path: Path) -> str | None:
    try:
        connector = aiohttp.UnixConnector(path=str(path))
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
            http.get("http://worker/metrics") as response,
        ):
            return await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
