"""What every relay session shares: settings, HTTP client, upstream config, metrics, limits."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp

from relay.core.credentials import Authenticator
from relay.core.overload import LagMeter
from relay.io.registry import CapacityExceeded, SessionRegistry
from relay.io.session_store import SessionStore
from relay.io.ticker import Ticker
from relay.io.upstream import UpstreamConfig
from relay.observability.metrics import RelayMetrics
from relay.settings import Settings

__all__ = ["CapacityExceeded", "RelayContext", "SessionRegistry"]


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
    store: SessionStore | None = None  # conversations in Redis, for a resume on any process
    overload: LagMeter = field(default_factory=lambda: LagMeter(0.0))
    ticker: Ticker = field(default_factory=Ticker)  # every conversation's housekeeping clock
    # Readiness fails for a short while after the upstream was found unreachable. It must expire
    # on its own: a replica taken out of rotation gets no new sessions to prove it healthy again.
    upstream_unreachable_until: float = 0.0

    def upstream_unreachable(self, now: float) -> bool:
        return now < self.upstream_unreachable_until
