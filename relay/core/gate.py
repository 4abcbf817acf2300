"""Hold-until-ready: which client events may go upstream now, and which must wait (F2).

The API loses audio sent before the session exists, and interprets appends under whatever input
format is in force when they arrive. So the relay holds client events until the upstream's
``session.created``, and holds appends sent after a format-changing ``session.update`` until the
matching ``session.updated`` (or the ``error`` rejecting it). Once anything is held, everything
after it is held too: events are never reordered. The gate is bounded in events, bytes and time;
when full the I/O layer stops reading the client (backpressure) instead of dropping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from relay.core.errors import HoldOverflow

# session.update fields whose change alters how later appends are interpreted.
_AUDIO_INPUT_KEYS = ("format", "turn_detection")


@dataclass(frozen=True, slots=True)
class HeldFrame:
    data: bytes
    event_type: str
    held_at: float


def changes_input_audio(event: dict[str, Any]) -> bool:
    """True for a ``session.update`` that changes the input format or turn detection."""
    session = event.get("session")
    if not isinstance(session, dict):
        return False
    if "input_audio_format" in session or "turn_detection" in session:  # beta shape
        return True
    audio = session.get("audio")
    audio_input = audio.get("input") if isinstance(audio, dict) else None
    return isinstance(audio_input, dict) and any(k in audio_input for k in _AUDIO_INPUT_KEYS)


class ReadinessGate:
    """Decides forward-or-hold for each client frame; releases held frames in order."""

    def __init__(self, *, max_events: int, max_bytes: int, timeout_s: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.session_ready = False  # the current upstream's session.created has arrived
        self.pending_updates = 0  # format-changing session.updates not yet answered
        self._held: deque[HeldFrame] = deque()
        self.held_bytes = 0

    # --- client side -------------------------------------------------------------------
    def must_hold(self, event_type: str) -> bool:
        if self._held or not self.session_ready:
            return True
        return self.pending_updates > 0 and event_type == "input_audio_buffer.append"

    def hold(self, data: bytes, event_type: str, now: float) -> None:
        self._held.append(HeldFrame(data, event_type, now))
        self.held_bytes += len(data)

    def requeue(self, data: bytes, event_type: str, held_at: float) -> None:
        """Put back at the head a frame that could not be sent: it stays first in line."""
        self._held.appendleft(HeldFrame(data, event_type, held_at))
        self.held_bytes += len(data)

    def has_room(self) -> bool:
        return len(self._held) < self.max_events and self.held_bytes < self.max_bytes

    def sent(self, event: dict[str, Any] | None, event_type: str) -> None:
        """Record a frame that went upstream (format-changing updates open a wait)."""
        if event_type == "session.update" and event is not None and changes_input_audio(event):
            self.pending_updates += 1

    # --- server side -------------------------------------------------------------------
    def on_server_event(self, event_type: str, event: dict[str, Any] | None = None) -> None:
        if event_type == "session.created":
            self.session_ready = True
        elif event_type == "session.updated" or (
            event_type == "error" and self.pending_updates and _rejects_session_update(event)
        ):
            self.pending_updates = max(0, self.pending_updates - 1)

    def upstream_lost(self) -> None:
        """A new upstream must announce itself again; answers to updates in flight are lost."""
        self.session_ready = False
        self.pending_updates = 0

    # --- release -----------------------------------------------------------------------
    def releasable(self) -> HeldFrame | None:
        """The next held frame that may go now, removed from the hold (None: keep waiting)."""
        if not self._held or not self.session_ready:
            return None
        head = self._held[0]
        if self.pending_updates and head.event_type == "input_audio_buffer.append":
            return None
        self._held.popleft()
        self.held_bytes -= len(head.data)
        return head

    def check_timeout(self, now: float) -> None:
        if self._held and now - self._held[0].held_at > self.timeout_s:
            raise HoldOverflow(
                f"the upstream session did not become ready within {self.timeout_s:g} s; "
                f"{len(self._held)} held event(s) were not delivered"
            )

    @property
    def held_count(self) -> int:
        return len(self._held)

    def drain_all(self) -> list[HeldFrame]:
        frames = list(self._held)
        self._held.clear()
        self.held_bytes = 0
        return frames


_SESSION_UPDATE_CODES = frozenset({"cannot_update_voice", "cannot_update_model"})


def _rejects_session_update(event: dict[str, Any] | None) -> bool:
    """An ``error`` answering a session.update: its param names ``session...`` or its code is one
    only a session.update produces. Other errors (a too-early commit, say) leave the wait open."""
    error = event.get("error") if event else None
    if not isinstance(error, dict):
        return False
    param = error.get("param")
    return (isinstance(param, str) and param.startswith("session")) or (
        error.get("code") in _SESSION_UPDATE_CODES
    )
