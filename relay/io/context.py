"""What every relay session shares: settings, HTTP client, upstream config, metrics, limits."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from relay.core.credentials import Authenticator, Identity
from relay.io.upstream import UpstreamConfig
from relay.observability.metrics import RelayMetrics
from relay.settings import Settings

if TYPE_CHECKING:
    from relay.io.session import RelaySession


class CapacityExceeded(Exception):
    """Over the global or per-identity session cap: HTTP 429 at the upgrade."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class SessionRegistry:
    """Live sessions, for caps, draining and readiness."""

    max_sessions: int
    max_per_identity: int  # a JWT identity: one user
    max_per_token: int | None = None  # a static token: usually a whole app's
    sessions: set[RelaySession] = field(default_factory=set)
    per_identity: Counter[str] = field(default_factory=Counter)
    empty: asyncio.Event = field(default_factory=asyncio.Event)
    reserved: int = 0  # admitted at the upgrade, whether or not their session has started yet

    def reserve(self, identity: Identity) -> None:
        if self.reserved >= self.max_sessions:
            raise CapacityExceeded(
                "global_session_cap",
                f"the relay is at its session capacity ({self.max_sessions} sessions; "
                "RELAY_MAX_SESSIONS raises it)",
            )
        limit, setting = self._limit_for(identity)
        if limit is not None and self.per_identity[identity.key] >= limit:
            raise CapacityExceeded(
                "identity_session_cap",
                f"too many concurrent sessions for this client identity ({limit} per "
                f"{'token' if identity.kind == 'token' else 'identity'}; {setting} raises it)",
            )
        self.per_identity[identity.key] += 1
        self.reserved += 1

    def _limit_for(self, identity: Identity) -> tuple[int | None, str]:
        if identity.kind == "token":
            return self.max_per_token, "RELAY_MAX_SESSIONS_PER_TOKEN"
        return self.max_per_identity, "RELAY_MAX_SESSIONS_PER_IDENTITY"

    def add(self, session: RelaySession) -> None:
        self.sessions.add(session)
        self.empty.clear()

    def release(self, session: RelaySession | None, identity_key: str) -> None:
        if session is not None:
            self.sessions.discard(session)
        self.reserved -= 1
        self.per_identity[identity_key] -= 1
        if self.per_identity[identity_key] <= 0:
            del self.per_identity[identity_key]
        if not self.sessions:
            self.empty.set()


@dataclass
class RelayContext:
    """Application-wide state handed to each session (one per app)."""

    settings: Settings
    http: aiohttp.ClientSession
    upstreams: UpstreamConfig
    metrics: RelayMetrics
    authenticator: Authenticator
    registry: SessionRegistry
    draining: bool = False
    # Readiness fails for a short while after the upstream was found unreachable. It must expire
    # on its own: a replica taken out of rotation gets no new sessions to prove it healthy again.
    upstream_unreachable_until: float = 0.0

    def upstream_unreachable(self, now: float) -> bool:
        return now < self.upstream_unreachable_until
