"""The input audio a replacement upstream needs, kept by turn detection (design.md, replay step 3).

A fresh upstream must get the audio the old one still held in its input buffer, and nothing more:
- manual turns (``turn_detection: null``): everything since the buffer last began (a commit or
  clear the API confirmed), bounded by the API's limit of one append (15 MiB);
- server or semantic VAD: the current utterance, from ``speech_started.audio_start_ms`` minus
  ``prefix_padding_ms``, while speech is in progress; between utterances only the last
  ``prefix_padding_ms`` plus a margin (the server notices speech, and its ``speech_started``
  reaches the relay, some time after the onset it reports: the margin covers that lag).

Audio sent faster than real time (a file, a buffered burst after a network stall) is different:
the server judges it on arrival, and its VAD events take a round trip to come back. So whatever
was sent within the last margin of wall-clock time is kept too, whatever its length in audio: a
replacement upstream must hear a burst the old one never had time to answer.

So an open microphone costs a fixed few hundred milliseconds of audio per session, however long
it runs. Positions are bytes of the current upstream's input stream (what the relay has sent it
since its session began), the clock of the API's ``audio_start_ms``; a replacement upstream's
stream starts with the replayed audio. Alignment is the buffer's, not an append's: a replay
starts on a whole sample counted from where the buffer began.
"""

from __future__ import annotations

from collections import deque
from time import monotonic

from relay.core.audio import BYTES_PER_MS, SAMPLE_BYTES
from relay.core.protocol import MAX_APPEND_BYTES

DEFAULT_PREFIX_PADDING_MS = 300  # the API's server_vad default; semantic_vad has no setting
VAD_MARGIN_MS = 300  # covers the VAD's detection lag plus the event's trip to the relay
_MARK_EVERY_S = 0.05  # how finely the wall-clock send times of the stream are remembered
_MARGIN_S = VAD_MARGIN_MS / 1000
_TRIM_EVERY_MS = 60  # audio appended between two trims of what a replay no longer needs


class AudioRetention:
    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._start = 0  # stream position of the first kept byte
        self.end = 0  # stream position after the last byte sent upstream
        self.origin = 0  # where the API's buffer last began (sample alignment counts from here)
        self.pinned_from: int | None = None  # kept whatever the VAD window: a commit in flight
        self._speech_from: int | None = None  # the current utterance is kept from here
        self._speech_end: int | None = None  # where the server heard the last utterance end
        self.encoding = "pcm16"
        self._per_ms = BYTES_PER_MS["pcm16"]  # bytes per millisecond of audio in that encoding
        self.vad = True  # the API's default session has server VAD
        self.prefix_ms = DEFAULT_PREFIX_PADDING_MS
        self._marks: deque[tuple[float, int]] = deque()  # (sent at, stream position before it)
        self._next_mark = 0.0  # when the next append is marked
        self._trim_at = 0  # the stream position whose append trims next
        self._sent_at: float | None = None  # when the last append was sent

    # ------------------------------------------------------------------ configuration
    def configure(self, encoding: str, turn_detection: object) -> None:
        """Follow the session's effective input settings (from the server's echoes)."""
        if encoding != self.encoding:
            self.encoding = encoding
            self._per_ms = BYTES_PER_MS.get(encoding, 48)
            self.cut(self.end)  # audio in the old format would be garbage under the new one
        self.vad = isinstance(turn_detection, dict)
        padding = turn_detection.get("prefix_padding_ms") if isinstance(turn_detection, dict) else None
        self.prefix_ms = padding if isinstance(padding, int) else DEFAULT_PREFIX_PADDING_MS

    # ------------------------------------------------------------------ the stream
    def append(self, audio: bytes, now: float | None = None) -> None:
        """Audio sent to the current upstream (``now``: when, on the monotonic clock).

        This runs for every 20 ms append, so it only stores: the send-time marks are taken every
        ``_MARK_EVERY_S`` and the old audio let go every ``_TRIM_EVERY_MS`` of new audio, which
        bounds what is held just as well (a replay reads :meth:`keep_from`, never the slack).
        """
        self._chunks.append(audio)
        self.end += len(audio)
        self._sent_at = now = monotonic() if now is None else now
        if now >= self._next_mark:
            self._marks.append((now, self.end - len(audio)))  # where the stream was before it
            self._next_mark = now + _MARK_EVERY_S
        if self.end >= self._trim_at:
            self._trim(now)

    def _trim(self, now: float | None = None) -> None:
        marks = self._marks
        while now is not None and len(marks) > 1 and now - marks[0][0] > _MARGIN_S:
            marks.popleft()  # the first mark left: where the stream was at most a margin ago
        self._release_before(self.keep_from())
        self._trim_at = self.end + _TRIM_EVERY_MS * self._per_ms

    def _release_before(self, position: int) -> None:
        """Let go of the chunks that end at or before ``position``.

        A trim under VAD lets go of a few chunks and keeps the window; a commit lets go of the
        whole turn (150 chunks for 3 s of 20 ms appends) and keeps the few sent since. So the
        walk starts from the end with less to step over, and a turn goes in one ``clear``:
        popping it chunk by chunk, each read cold, cost ~100 us a commit under load (~25 now).
        """
        chunks = self._chunks
        if not chunks or position <= self._start:
            return
        if position - self._start <= self.end - position:
            while chunks and self._start + len(chunks[0]) <= position:
                self._start += len(chunks.popleft())
            return
        start, kept = self.end, 0  # where the kept chunks begin, and how many they are
        for chunk in reversed(chunks):
            if start <= position:
                break
            start -= len(chunk)
            kept += 1
        tail = [chunks.pop() for _ in range(kept)]
        chunks.clear()
        chunks.extend(reversed(tail))
        self._start = start

    def keep_from(self) -> int:
        """The first stream position a replacement upstream needs."""
        if self.vad:
            if self._speech_from is not None:
                needed = self._speech_from
            else:
                needed = self.end - (self.prefix_ms + VAD_MARGIN_MS) * self._per_ms
                if self._marks:  # and everything sent too recently for the server to have answered
                    needed = min(needed, self._marks[0][1] - self.prefix_ms * self._per_ms)
            needed = max(needed, self.origin)
        else:
            needed = max(self.origin, self.end - MAX_APPEND_BYTES)
        return needed if self.pinned_from is None else min(needed, self.pinned_from)

    def speech_started(self, audio_start_ms: object) -> None:
        """The server heard speech start at ``audio_start_ms`` of this upstream's stream."""
        start_ms = audio_start_ms if isinstance(audio_start_ms, int | float) else self.end / self._per_ms
        self._speech_from = max(0, int((start_ms - self.prefix_ms) * self._per_ms))

    def speech_stopped(self, audio_end_ms: object) -> None:
        self._speech_from = None
        if isinstance(audio_end_ms, int | float):
            self._speech_end = min(self.end, int(audio_end_ms * self._per_ms))

    def committed_stop(self) -> int:
        """Where the server's own commit (a VAD turn) cut the buffer: where the speech ended."""
        return self._speech_end if self._speech_end is not None else self.end

    def server_committed(self) -> None:
        """The server committed the buffer on its own (a VAD turn): it ended with the speech."""
        self.cut(self.committed_stop())

    def cut(self, position: int) -> None:
        """The API's buffer began again at ``position`` (a commit or clear it confirmed)."""
        self._speech_from = self._speech_end = None
        self.origin = max(self.origin, min(position, self.end))
        self._trim()
        if not self.vad or self.pinned_from is not None:
            self._drop_before(self.origin)

    def _drop_before(self, position: int) -> None:
        self._release_before(position)
        chunks = self._chunks
        if chunks and self._start < position:
            chunks[0] = chunks[0][position - self._start :]
            self._start = position

    # ------------------------------------------------------------------ replay
    def replay_from(self) -> int:
        """Where a replay starts: the first needed position, on the buffer's sample grid."""
        start = max(self.keep_from(), self._start)
        return start + (self.origin - start) % SAMPLE_BYTES.get(self.encoding, 2)

    def segment(self, start: int, stop: int) -> bytes:
        """The kept bytes between two stream positions."""
        start, stop = max(start, self._start), min(stop, self.end)
        if stop <= start:
            return b""
        # Only the chunks in range, the two ends as views: one copy. A turn's audio is hundreds
        # of KiB, and joining it all then slicing made two such buffers (each a fresh mapping,
        # faulted in page by page) at every commit.
        parts: list[bytes | memoryview] = []
        position = self._start
        for chunk in self._chunks:
            size = len(chunk)
            if position >= stop:
                break
            if position + size > start:
                low, high = max(start - position, 0), min(stop - position, size)
                parts.append(chunk if low == 0 and high == size else memoryview(chunk)[low:high])
            position += size
        return b"".join(parts)

    def restart(self, replayed: bytes, *, speaking: bool) -> None:
        """A replacement upstream was sent ``replayed``: its stream (and clock) starts with it."""
        self._chunks.clear()
        self._start = self.origin = 0
        self.end = len(replayed)
        self._speech_from = 0 if speaking else None
        self._speech_end = None
        self._marks.clear()  # sent all at once just now: a burst the new upstream has yet to judge
        now = monotonic()
        self._marks.append((now, 0))
        self._next_mark = now + _MARK_EVERY_S
        self._trim_at = 0
        if replayed:
            self._chunks.append(replayed)

    @property
    def speaking(self) -> bool:
        return self._speech_from is not None

    @property
    def kept_bytes(self) -> int:
        """What is held once trimmed (between trims up to ``_TRIM_EVERY_MS`` more)."""
        self._trim(self._sent_at)
        return self.end - self._start
