"""The relay's shortcut for its commonest frames: the app's 20 ms append and the API's streaming
answer (its audio deltas, and the text deltas and ends of parts beside them), together ~90% of
the frames of a voice session (the benchmark's: 89%; a recorded live session's server side is 40%
audio deltas and 35% text deltas).

A lane is offered each text message of its connection before the conversation's handler
(``relay.io.frame_path``). It takes the message only when it is that frame and the conversation
is in its steady state (the upstream ready and nothing held, the client attached, no beta
translation); it then does exactly what the conversation's own path does for it, in fewer steps.
Anything else it declines, untouched, and the full path decides: so a lane can make the relay
faster, never different. ``relay/io/_frame_path.pyx`` holds the compiled twins, which take the
same steps without a Python call; these are the reference and the fallback.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from relay.core.protocol import STREAM_EVENT_TYPES
from relay.io.frames import delta_chars

if TYPE_CHECKING:
    from relay.io.conversation import Conversation
    from relay.io.link import UpstreamLink
    from relay.io.websocket import WebSocketConnection

APPEND = "input_audio_buffer.append"
AUDIO_DELTA = "response.output_audio.delta"
AUDIO_DELTA_PREFIX = b'{"type":"response.output_audio.delta"'
# The other events of a streaming answer: parsed (the state's mirror follows an item's text and a
# tool call's arguments from the deltas), tracked by nothing else.
STREAM_EVENT_PREFIXES = tuple(b'{"type":"%s"' % t.encode() for t in STREAM_EVENT_TYPES)
C2U = "client_to_upstream"  # relay.observability.frame_metrics.DIRECTIONS
U2C = "upstream_to_client"


class PyLane:
    """What the lanes share: counting their frame in the frame metrics, as the full path does."""

    def __init__(self, conversation: Conversation, direction: str, event_type: str) -> None:
        self.conversation = conversation
        self.direction = direction
        self.cell = conversation.metrics.frames.cell(direction, event_type)

    def counted(self, size: int, received: float, cell: list[int] | None = None) -> None:
        cell = self.cell if cell is None else cell
        cell[0] += 1
        cell[1] += size
        self.conversation.metrics.latency(self.direction, time.perf_counter() - received)


class PyAppendLane(PyLane):
    """The app's plain append: checked (``ClientEventChecker.take_append``), sent upstream,
    kept for a replay, counted."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__(conversation, C2U, APPEND)

    @property
    def upstream(self) -> WebSocketConnection | None:
        """The connection appends go to when nothing holds them (None: no upstream)."""
        link = self.conversation.link
        return None if link is None else link.conn

    def relink(self, link: UpstreamLink | None) -> None:
        """The conversation's link changed: the compiled lane holds its connection from here;
        this one reads the conversation's, so that a missed call shows as a difference."""

    def take(self, data: bytes) -> bool:
        conversation = self.conversation
        received = time.perf_counter()
        audio = conversation.checker.take_append(data)
        if audio is None:
            return False
        link = conversation.link
        if link is None or conversation.gate.must_hold(APPEND) or not link.conn.send(data):
            conversation.forward_upstream(data, APPEND, None)  # held, or back in line
        else:
            conversation.supervisor.state.audio.append(audio)
        self.counted(len(data), received)
        return True


class PyDeltaLane(PyLane):
    """The API's streaming answer on the current upstream. An audio delta, never parsed: its size
    noted for a truncation, sent to the app and kept for its resume, counted. The other events of
    the stream (``STREAM_EVENT_TYPES``: text deltas, the ends of parts): parsed for the state's mirror
    (``SessionState.on_server_event``), then the same; what else the full path does for a server
    event (usage, the snapshot's version, the gate, the checker) takes none of them, and the
    supervisor's part none either while it ``passes_stream_events``."""

    def __init__(self, conversation: Conversation, link: UpstreamLink) -> None:
        super().__init__(conversation, U2C, AUDIO_DELTA)
        self.link = link
        self.stream_cells = [conversation.metrics.frames.cell(U2C, t) for t in STREAM_EVENT_TYPES]

    def take(self, data: bytes) -> bool:
        conversation = self.conversation
        if self.link is not conversation.link or conversation.beta is not None:
            return False
        if not data.startswith(AUDIO_DELTA_PREFIX):
            return self._take_stream_event(data)
        received = time.perf_counter()
        state = conversation.supervisor.state
        if state.partial is not None:
            state.on_audio_delta(delta_chars(data))
        conversation.to_client(data)
        self.counted(len(data), received)
        return True

    def _take_stream_event(self, data: bytes) -> bool:
        kind = next((k for k, prefix in enumerate(STREAM_EVENT_PREFIXES) if data.startswith(prefix)), -1)
        conversation = self.conversation
        if kind < 0 or not conversation.supervisor.passes_stream_events:
            return False
        received = time.perf_counter()
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False  # the full path's to answer
        if not isinstance(event, dict):
            return False
        conversation.supervisor.state.on_server_event(event)
        conversation.to_client(data)
        self.counted(len(data), received, self.stream_cells[kind])
        return True


if TYPE_CHECKING:
    AppendLane, DeltaLane = PyAppendLane, PyDeltaLane
else:
    from relay.core import speedups

    _compiled = speedups.compiled("relay.io._frame_path")
    if _compiled is None:
        AppendLane, DeltaLane = PyAppendLane, PyDeltaLane
    else:
        AppendLane, DeltaLane = _compiled.AppendLane, _compiled.DeltaLane
