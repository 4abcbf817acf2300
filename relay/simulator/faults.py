"""Fault injection for one simulated session: now, or right after the N-th event of a type."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """``drop`` (abrupt TCP reset: the peer sees 1006), ``close`` (a code), ``server_error``,
    ``stall`` (stop reading for ``seconds``) or ``latency`` (``ms`` before every event)."""

    kind: str
    code: int | None = None
    reason: str | None = None
    seconds: float = 0.0
    ms: float = 0.0
    after_event: str | None = None
    count: int = 1
    minutes: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Fault:
        kind = str(body.get("kind", ""))
        if kind not in ("drop", "close", "server_error", "stall", "latency"):
            raise ValueError(f"unknown fault kind {kind!r}")
        return cls(
            kind=kind,
            code=body.get("code"),
            reason=body.get("reason"),
            seconds=float(body.get("seconds", 0)),
            ms=float(body.get("ms", 0)),
            after_event=body.get("after_event"),
            count=int(body.get("count", 1)),
        )


@dataclass
class FaultBoard:
    armed: list[Fault] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0

    def arm(self, fault: Fault) -> None:
        self.armed.append(fault)

    def arm_now(self, fault: Fault) -> None:
        """Faults that change behaviour from now on rather than happen once (a stall is the
        socket's: :meth:`SimChannel.stall`)."""
        if fault.kind == "latency":
            self.latency_s = fault.ms / 1000

    def after_sent(self, event_type: str) -> Fault | None:
        if not self.armed:
            return None
        self.seen[event_type] = self.seen.get(event_type, 0) + 1
        for fault in self.armed:
            if fault.after_event == event_type and self.seen[event_type] >= fault.count:
                self.armed.remove(fault)
                return fault
        return None

    async def before_send(self) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
