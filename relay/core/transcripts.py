"""Transcripts in the order the app committed its audio.

A transcription session transcribes each committed utterance asynchronously, and a long one can
finish after a short one behind it; after a replacement upstream re-transcribes what the old one
had not finished, completions arrive in yet another order. The app gets every ``.completed`` (or
``.failed``) in commit order: a finished transcript waits until the ones committed before it are
out. Deltas are not held: they stream per item and carry its id.
"""

from __future__ import annotations

from collections import deque

FINISHED = frozenset(
    {
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
    }
)


class TranscriptOrder:
    def __init__(self) -> None:
        self._order: deque[str] = deque()  # committed item ids, not finished yet
        self._held: dict[str, bytes] = {}

    def committed(self, item_id: str) -> None:
        self._order.append(item_id)

    def finished(self, item_id: str, frame: bytes) -> list[bytes]:
        """The frames to show now, in commit order (``frame`` may be among them, or held)."""
        if item_id not in self._order:
            return [frame]  # not one the app committed through us: nothing to keep it behind
        self._held[item_id] = frame
        shown: list[bytes] = []
        while self._order and self._order[0] in self._held:
            shown.append(self._held.pop(self._order.popleft()))
        return shown

    @property
    def waiting(self) -> int:
        return len(self._held)
