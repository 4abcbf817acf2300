"""The conversations this process holds: caps at the upgrade, lookup for a resume, draining.

A conversation outlives the connection that started it, so it runs as a task of its own, owned
here (cancelled and awaited at shutdown), not inside the HTTP handler that upgraded it. Its slot
under the caps is held from the upgrade until the conversation ends, attached or not.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.core.credentials import Identity


class CapacityExceeded(Exception):
    """Over the global or per-identity session cap: HTTP 429 at the upgrade."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SharedSlots(Protocol):
    """The session caps across worker processes (``relay.io.workers``)."""

    async def reserve(self, kind: str, key: str, spare: int = 0) -> CapacityExceeded | None: ...
    def release(self, key: str) -> None: ...


class Live(Protocol):
    """What the registry needs of a conversation."""

    id: str
    identity_key: str

    @property
    def detached(self) -> bool: ...
    def run(self) -> Coroutine[Any, Any, None]: ...
    async def shutdown(self, code: int = 1001, message: str = "the relay is shutting down") -> None: ...
    async def park(self, reason: str) -> bool: ...


@dataclass
class SessionRegistry:
    """Live conversations, by id, for caps, resume, draining and readiness."""

    max_sessions: int
    max_per_identity: int  # a JWT identity: one user
    max_per_token: int | None = None  # a static token: usually a whole app's
    sessions: dict[str, Live] = field(default_factory=dict)
    per_identity: Counter[str] = field(default_factory=Counter)
    empty: asyncio.Event = field(default_factory=asyncio.Event)
    reserved: int = 0  # admitted at the upgrade, whether or not their session has started yet
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _detached: set[str] = field(default_factory=set)  # ids of those waiting for their client

    def __post_init__(self) -> None:
        self.empty.set()

    shared: SharedSlots | None = None  # several workers: the caps hold across them

    def reserve(self, identity: Identity, spare: int = 0) -> None:
        self.reserve_slot(identity.kind, identity.key, spare)

    async def admit(self, identity: Identity, *, replacing: bool = False) -> None:
        """Reserve a slot here and, with several workers, across them; raises CapacityExceeded.

        ``replacing``: a conversation taken over from another process, whose slot there (with
        several workers, under the same caps) is freed only once its owner lets it go, after
        this. Counting both would refuse a client at its cap the return to its own conversation
        (its grace would then run out): the caps allow one more for it, for that moment.
        """
        spare = 1 if replacing else 0
        self.reserve(identity, spare)
        if self.shared is None:
            return
        try:
            refusal = await self.shared.reserve(identity.kind, identity.key, spare)
        except BaseException:
            self._release_local(identity.key)
            raise
        if refusal is not None:
            self._release_local(identity.key)
            raise refusal

    def reserve_slot(self, kind: str, key: str, spare: int = 0) -> None:
        if self.reserved >= self.max_sessions + spare:
            raise CapacityExceeded(
                "global_session_cap",
                f"the relay is at its session capacity ({self.max_sessions} sessions; "
                "RELAY_MAX_SESSIONS raises it)",
            )
        limit, setting = self._limit_for(kind)
        if limit is not None and self.per_identity[key] >= limit + spare:
            raise CapacityExceeded(
                "identity_session_cap",
                f"too many concurrent sessions for this client identity ({limit} per "
                f"{'token' if kind == 'token' else 'identity'}; {setting} raises it)",
            )
        self.per_identity[key] += 1
        self.reserved += 1

    def _limit_for(self, kind: str) -> tuple[int | None, str]:
        # A static token is usually a whole app's, and so are unauthenticated clients (a
        # developer's relay on loopback): not one user's, so the per-identity cap is not theirs.
        if kind in ("token", "anonymous"):
            return self.max_per_token, "RELAY_MAX_SESSIONS_PER_TOKEN"
        return self.max_per_identity, "RELAY_MAX_SESSIONS_PER_IDENTITY"

    def start(self, conversation: Live) -> None:
        """Run ``conversation`` (already reserved) until it ends; then free its slot."""
        self.sessions[conversation.id] = conversation
        self.empty.clear()
        task = asyncio.create_task(conversation.run(), name=f"conversation {conversation.id}")
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._ended(done, conversation))

    def _ended(self, task: asyncio.Task[None], conversation: Live) -> None:
        self._tasks.discard(task)
        self.sessions.pop(conversation.id, None)
        self._detached.discard(conversation.id)
        self.release(conversation.identity_key)

    def release(self, identity_key: str) -> None:
        """Free a reserved slot (an upgrade that never started its conversation, or one ended)."""
        self._release_local(identity_key)
        if self.shared is not None:
            self.shared.release(identity_key)

    def _release_local(self, identity_key: str) -> None:
        self.reserved -= 1
        self.per_identity[identity_key] -= 1
        if self.per_identity[identity_key] <= 0:
            del self.per_identity[identity_key]
        if not self.sessions:
            self.empty.set()

    def get(self, session_id: str) -> Live | None:
        return self.sessions.get(session_id)

    def note_detached(self, conversation: Live) -> int:
        """Record whether ``conversation`` waits for its client; returns how many do.

        Kept as it changes, not counted: when a network blip drops every client at once, a
        count over all conversations per detach cost 0.2 s of CPU at 2,000 conversations.
        """
        if conversation.detached and self.sessions.get(conversation.id) is conversation:
            self._detached.add(conversation.id)
        else:
            self._detached.discard(conversation.id)
        return len(self._detached)

    async def close_all(self, code: int, timeout_s: float = 5.0) -> int:
        """Close every conversation with ``code``; returns how many did not end in time."""
        await asyncio.gather(
            *(conversation.shutdown(code) for conversation in list(self.sessions.values())),
            return_exceptions=True,
        )
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return len(pending)
        return 0
