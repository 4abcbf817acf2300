"""The relay's Redis connections (budgets, conversations): one way to open them and to fail.

No retries inside redis-py: each caller's policy decides at once what an unreachable Redis means
(budgets: fail open or closed; conversations: stay where they are, sync again next time).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError


class StoreUnavailable(Exception):
    """Redis did not answer, or answered with an error."""


def connect(url: str, timeout_s: float | None) -> Redis:
    """A client whose commands (and connecting) give up after ``timeout_s`` (None: never, for a
    subscription that waits for messages)."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s if timeout_s is not None else 5.0,
        retry=Retry(NoBackoff(), 0),
    )


async def run(pipe: Any) -> list[Any]:
    """Execute a pipeline; a failure is :class:`StoreUnavailable`."""
    try:
        return list(await pipe.execute())
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(str(exc)) from exc
