"""The app's connection to a conversation, which can come and go while the conversation goes on.

A conversation (``relay.io.conversation``) talks to "its client" through the few operations a
WebSocket connection offers: send, pause and resume reading, keepalive, close. While the app is
away (its connection dropped, it has not resumed yet) that client is a :class:`DetachedClient`:
frames sent to it are kept only in the conversation's resume log, reading cannot be paused
because nothing is read, and nothing ever closes. So the conversation's code has one path,
attached or not.
"""

from __future__ import annotations

from relay.core.websocket import ABNORMAL_CLOSURE, GOING_AWAY, OP_TEXT

# Ends of a connection that lose a client rather than end its conversation: no close frame at all
# (1006: a reset, a dead network, a keepalive timeout) or 1001, "going away" (a tab put to sleep,
# an app sent to the background). Any other close (1000, an app's own 4xxx) ends it on purpose.
LOST = frozenset({ABNORMAL_CLOSURE, GOING_AWAY})


class DetachedClient:
    """No client is attached: the conversation keeps everything in its resume log."""

    write_paused_since = 0.0

    def send(self, data: bytes, opcode: int = OP_TEXT) -> bool:
        return False

    def pause_reading(self, reason: str) -> None:
        return None

    def resume_reading(self, reason: str) -> None:
        return None

    def paused_for(self, reason: str) -> bool:
        return False

    def keepalive(self, now: float, interval: float) -> bool:
        return True

    async def close(self, code: int = GOING_AWAY, reason: bytes = b"") -> None:
        return None

    def abort(self) -> None:
        return None


def ended_on_purpose(close_code: int | None) -> bool:
    """Whether a client's close means it is done, rather than lost (see LOST)."""
    return close_code is not None and close_code not in LOST
