"""Conversations in Redis, so a client may resume on any worker or replica (``RELAY_REDIS_URL``).

Per conversation, under ``relay:session:<id>``:

- the snapshot (``relay.core.snapshot``): identity, credential hash, configuration, items;
- ``:log``, a list of the server events the client may not have seen, written only while the
  client is away (and when a process lets the conversation go);
- ``:lease``, the owning process, expiring unless renewed (a crashed owner's lapses);
- ``:fence``, a counter raised by each takeover: every write of an owner is checked against it
  in the same Lua script, so a process that lost its conversation (it stalled, its lease lapsed,
  another process took over) can never write over the new owner's state; it learns at its next
  renewal and ends its copy.

No per-frame Redis traffic while a client is attached: one task per process renews the leases
and writes what changed (snapshots at item and configuration boundaries, log frames of detached
clients) every ``SYNC_INTERVAL_S``, pipelined. A process asked to give a conversation up (another
process has its client) hears it on a pub/sub channel.

When Redis is unreachable the conversations go on where they are; only a resume on another
process is unavailable (``relay_session_store_up`` 0, a log line, ``/readyz`` detail). When it is
back, the next sync registers every conversation again (a Redis restarted empty included).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay.io import redis_client
from relay.io.redis_client import StoreUnavailable
from relay.observability.logging import get_logger
from relay.observability.metrics import RelayMetrics

SYNC_INTERVAL_S = 0.25
# Handing a conversation over (parking, loading, acquiring) is rare and must not fail for a busy
# moment: a deploy parks every conversation at once. Longer timeouts, bounded concurrency, retries.
HANDOVER_TIMEOUT_S = 2.0
HANDOVER_CONCURRENCY = 16
PARK_ATTEMPTS = 3
RELEASE_CHANNEL = "relay:session-release"
_PREFIX = "relay:session:"
_PUSH_CHUNK = 1000  # frames per RPUSH inside the scripts (Lua's unpack has a stack limit)
_WRITE_SLICE_S = 0.002  # of snapshot taking between two writes (the event loop runs in between)

_log = get_logger()


@dataclass
class Pending:
    """What one conversation has to write at this sync (empty: nothing)."""

    snapshot: bytes | None = None
    frames: list[bytes] = field(default_factory=list)
    clear_log: bool = False


class Stored(Protocol):
    """What the store needs of a conversation it keeps."""

    id: str
    store_fence: int

    def store_pending(self) -> Pending: ...
    def store_registered(self) -> None: ...  # (again): everything must be written
    def taken_over(self) -> None: ...  # another process owns it now: end this copy
    def release_requested(self) -> None: ...  # another process has its client: let go


# KEYS: fence, lease, snapshot, log. ARGV: owner, fence (0: not yet registered), lease ms, ttl ms.
# Returns {status, fence}: 0 renewed, 1 (re)registered (write everything), 2 fenced out.
_RENEW = """
local f = redis.call('GET', KEYS[1])
if not f then
  if ARGV[2] == '0' then f = tostring(redis.call('INCR', KEYS[1])) else
    redis.call('SET', KEYS[1], ARGV[2]); f = ARGV[2] end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. f, 'PX', ARGV[3])
  return {1, tonumber(f)}
end
if f ~= ARGV[2] then return {2, tonumber(f)} end
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. f, 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return {0, tonumber(f)}
"""

# KEYS: fence, snapshot, log, lease. ARGV: fence, ttl ms, snapshot ('' keeps it), clear log
# ('1'), release lease ('1'), frames... Returns 1, or 0 when fenced out.
_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2]) end
if ARGV[4] == '1' then redis.call('DEL', KEYS[3]) end
for i = 6, #ARGV, CHUNK do
  redis.call('RPUSH', KEYS[3], unpack(ARGV, i, math.min(i + CHUNK - 1, #ARGV)))
end
if #ARGV >= 6 then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
if ARGV[5] == '1' then redis.call('DEL', KEYS[4]) end
return 1
""".replace("CHUNK", str(_PUSH_CHUNK))

# KEYS: fence, lease, snapshot. ARGV: owner, lease ms, ttl ms.
# Returns the new fence, 0 when another process holds the lease, -1 when the session is gone.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local f = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. f, 'PX', ARGV[2])
return f
"""

# KEYS: fence, lease, snapshot, log. ARGV: fence. The conversation ended: nothing to resume.
_DELETE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
"""


def _keys(session_id: str) -> tuple[str, str, str, str]:
    base = _PREFIX + session_id
    return f"{base}:fence", f"{base}:lease", base, f"{base}:log"


class SessionStore:
    """The Redis side of cross-process resume; one per process."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        lease_s: float,
        ttl_s: float,
        metrics: RelayMetrics,
    ) -> None:
        # No retries: a sync that fails is simply done again at the next one.
        self._redis: Redis = redis_client.connect(url, timeout_s)
        self._handover: Redis = redis_client.connect(url, max(timeout_s, HANDOVER_TIMEOUT_S))
        self._handovers = asyncio.Semaphore(HANDOVER_CONCURRENCY)
        # A subscription waits for messages as long as it takes: no read timeout on its socket.
        self._subscriber: Redis = redis_client.connect(url, None)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.lease_ms = int(lease_s * 1000)
        self.ttl_ms = int(ttl_s * 1000)
        self.metrics = metrics
        self.up = True
        self._renew = self._redis.register_script(_RENEW)
        self._write = self._redis.register_script(_WRITE)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._delete = self._redis.register_script(_DELETE)
        self._kept: dict[str, Stored] = {}
        self._renewed_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        metrics.session_store_up.set(1)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._sync_forever(), name="session store sync"),
            asyncio.create_task(self._listen_for_releases(), name="session store releases"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()
            await self._handover.aclose()
            await self._subscriber.aclose()

    # ------------------------------------------------------------------ conversations kept here
    def keep(self, conversation: Stored) -> None:
        """Write ``conversation`` from the next sync on, and renew its lease."""
        self._kept[conversation.id] = conversation

    def forget(self, session_id: str) -> None:
        self._kept.pop(session_id, None)

    async def sync(self) -> None:
        """Renew every lease (once per third of the lease) and write what changed, in one round
        trip; a failure marks the store down until a sync succeeds."""
        kept = list(self._kept.values())
        if not kept:
            return
        now = time.monotonic()
        renew = now - self._renewed_at >= self.lease_ms / 3000 or any(c.store_fence == 0 for c in kept)
        try:
            if renew:
                await self._renew_all(kept)
                self._renewed_at = now
            await self._write_all([c for c in kept if c.id in self._kept and c.store_fence])
        except StoreUnavailable as exc:
            self._down("sync", exc)
            return
        self._up()

    async def _renew_all(self, kept: list[Stored]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for conversation in kept:
            await self._renew(  # queued on the pipeline
                keys=_keys(conversation.id),
                args=[self.owner, conversation.store_fence, self.lease_ms, self.ttl_ms],
                client=pipe,
            )
        results = await redis_client.run(pipe)
        for conversation, (status, fence) in zip(kept, results, strict=True):
            if status == 2:
                self.forget(conversation.id)
                self.metrics.session_store_events_total.labels("fenced_out").inc()
                conversation.taken_over()
            elif status == 1:
                conversation.store_fence = int(fence)
                conversation.store_registered()

    async def _write_all(self, kept: list[Stored]) -> None:
        """Write what changed, in slices of ~2 ms of work: a snapshot costs up to ~3.5 ms (500
        items), and taken for every changed conversation in one go they held the event loop,
        and every session's frames, for 60-300 ms (50 long conversations). Each slice is sent
        before the next is taken, so no write is held back while others go ahead of it."""
        writes: list[tuple[Stored, Pending]] = []
        started = time.perf_counter()
        for conversation in kept:
            pending = conversation.store_pending()
            if pending.snapshot is not None or pending.frames or pending.clear_log:
                writes.append((conversation, pending))
            if writes and time.perf_counter() - started >= _WRITE_SLICE_S:
                await self._write_slice(writes)
                writes, started = [], time.perf_counter()
        if writes:
            await self._write_slice(writes)

    async def _write_slice(self, writes: list[tuple[Stored, Pending]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for conversation, pending in writes:
            await self._write_call(pipe, conversation.id, conversation.store_fence, pending, release=False)
        results = await redis_client.run(pipe)
        for (conversation, _), ok in zip(writes, results, strict=True):
            if not ok:
                self.forget(conversation.id)
                self.metrics.session_store_events_total.labels("fenced_out").inc()
                conversation.taken_over()

    async def _write_call(
        self, client: Any, session_id: str, fence: int, pending: Pending, *, release: bool
    ) -> Any:
        fence_key, lease, snapshot, log = _keys(session_id)
        args: list[bytes | str | int] = [
            fence,
            self.ttl_ms,
            pending.snapshot or b"",
            "1" if pending.clear_log else "0",
            "1" if release else "0",
            *pending.frames,
        ]
        return await self._write(keys=[fence_key, snapshot, log, lease], args=args, client=client)

    async def park(self, session_id: str, fence: int, pending: Pending) -> bool:
        """Write the conversation's last state and let go of its lease (it can be taken over at
        once); False when it could not be written."""
        self.forget(session_id)
        for attempt in range(PARK_ATTEMPTS):
            try:
                async with self._handovers:  # the script is atomic: a retry rewrites the same
                    written = await self._write_call(self._handover, session_id, fence, pending, release=True)
                return bool(written)
            except (RedisError, OSError) as exc:
                self.metrics.session_store_failures_total.labels("park").inc()
                if attempt == PARK_ATTEMPTS - 1:
                    self._down("park", StoreUnavailable(str(exc)))
                    return False
                await asyncio.sleep(0.1 * (attempt + 1))
        return False

    async def delete(self, session_id: str, fence: int) -> None:
        """The conversation ended for good: nothing is left to resume."""
        self.forget(session_id)
        if not fence:
            return
        try:
            await self._delete(keys=_keys(session_id), args=[fence])
        except (RedisError, OSError) as exc:
            self._down("delete", StoreUnavailable(str(exc)))  # its keys expire on their own

    # ------------------------------------------------------------------ taking over
    async def load(self, session_id: str) -> tuple[bytes | None, list[bytes]]:
        """A conversation's snapshot (None: unknown or expired) and its log."""
        _, _, snapshot, log = _keys(session_id)
        pipe = self._handover.pipeline(transaction=False)
        pipe.get(snapshot)
        pipe.lrange(log, 0, -1)
        data, frames = await redis_client.run(pipe)
        return data, list(frames)

    async def acquire(
        self,
        session_id: str,
        *,
        wait_s: float,
        on_waiting: Callable[[], Awaitable[None]] | None = None,
    ) -> int | None:
        """Own ``session_id``: its new fence, or None when it is gone. Asks the owner to let go,
        and waits up to ``wait_s`` for that (or for a dead owner's lease to lapse)."""
        fence_key, lease, snapshot, _ = _keys(session_id)
        deadline = time.monotonic() + wait_s
        asked = False
        while True:
            keys = [fence_key, lease, snapshot]
            args: list[str | int] = [self.owner, self.lease_ms, self.ttl_ms]
            result = int(await self._call(self._acquire(keys=keys, args=args, client=self._handover)))
            if result > 0:
                return result
            if result < 0:
                return None
            if not asked:
                asked = True
                await self._call(self._handover.publish(RELEASE_CHANNEL, session_id))
                if on_waiting is not None:
                    await on_waiting()
            if time.monotonic() >= deadline:
                raise StoreBusy(session_id)
            await asyncio.sleep(0.02)

    async def _call(self, awaitable: Awaitable[Any]) -> Any:
        try:
            result = await awaitable
        except (RedisError, OSError) as exc:
            self._down("takeover", StoreUnavailable(str(exc)))
            raise StoreUnavailable(str(exc)) from exc
        self._up()
        return result

    # ------------------------------------------------------------------ background
    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            try:
                await self.sync()
            except Exception as exc:  # a bug here must not stop every later sync
                _log.error("session_store_sync_crashed", error=repr(exc))

    async def _listen_for_releases(self) -> None:
        """Requests to let a conversation go, from the process its client reached."""
        while True:
            try:
                pubsub = self._subscriber.pubsub()
                async with pubsub:
                    await pubsub.subscribe(RELEASE_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        session_id = message["data"].decode(errors="replace")
                        conversation = self._kept.get(session_id)
                        if conversation is not None:
                            conversation.release_requested()
            except (RedisError, OSError) as exc:
                self._down("subscribe", StoreUnavailable(str(exc)))
                await asyncio.sleep(1.0)

    def _down(self, operation: str, exc: StoreUnavailable) -> None:
        self.metrics.session_store_failures_total.labels(operation).inc()
        if self.up:
            self.up = False
            self.metrics.session_store_up.set(0)
            _log.warning("session_store_unavailable", operation=operation, error=str(exc)[:200])

    def _up(self) -> None:
        if not self.up:
            self.up = True
            self.metrics.session_store_up.set(1)
            _log.info("session_store_available")


class StoreBusy(Exception):
    """The conversation's owner did not let go in time (and its lease has not lapsed)."""
