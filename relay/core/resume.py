"""Resume bookkeeping, sans I/O: what a client that lost its connection needs to carry on.

A conversation outlives its client's connection (a phone switching networks, an app sent to the
background, a relay redeployed). Three things make the client's return exact:

- :class:`SentLog`: the server events sent to the client, kept after they were written. While the
  client is attached only a short window is kept (the frames in flight when a connection dies may
  never have arrived); while it is away everything is kept, bounded in bytes and count. On its
  return the client names the last event it processed and gets every later one, once, in order.
- :class:`ResumeCredential`: a secret the client shows to come back, bound to its identity,
  replaced at each resume, kept only as a hash and compared in constant time.
- :class:`SeenClientEvents`: the client events already forwarded, by ``event_id`` and item id, so
  an app that re-sends what it is unsure about creates no duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

TOKEN_BYTES = 32
_EVENT_ID = b'"event_id":"'


class ResumeBufferFull(Exception):
    """The client stayed away while more was said than the buffer holds: it cannot resume."""


class SentLog:
    """Server frames sent (or meant) for the client, oldest first."""

    def __init__(self, *, window_bytes: int, window_frames: int, max_bytes: int, max_frames: int) -> None:
        self.window_bytes, self.window_frames = window_bytes, window_frames
        self.max_bytes, self.max_frames = max_bytes, max_frames
        self._frames: deque[bytes] = deque()
        self.bytes = 0
        self.detached = False

    def append(self, frame: bytes) -> None:
        """Called for every frame to the client: an append and, mostly, nothing else."""
        self._frames.append(frame)
        self.bytes += len(frame)
        if self.detached:
            if self.bytes > self.max_bytes or len(self._frames) > self.max_frames:
                raise ResumeBufferFull(f"{len(self._frames)} events, {self.bytes} bytes")
            return
        frames = self._frames
        while self.bytes > self.window_bytes or len(frames) > self.window_frames:
            self.bytes -= len(frames.popleft())

    def after(self, event_id: str | None) -> tuple[list[bytes], bool]:
        """The frames after the one carrying ``event_id`` (all of them when it is not found), and
        whether it was found: a miss means the client may have lost events older than the log."""
        frames = list(self._frames)
        if not event_id:
            return frames, False
        needle = _EVENT_ID + event_id.encode() + b'"'
        for index in range(len(frames) - 1, -1, -1):  # the last processed event is usually recent
            if needle in frames[index]:
                return frames[index + 1 :], True
        return frames, False

    def frames_from(self, index: int) -> list[bytes]:
        """The frames from position ``index`` on (stable while detached: nothing is dropped)."""
        frames = self._frames
        return [frames[i] for i in range(index, len(frames))]

    def detach(self) -> None:
        self.detached = True

    def attach(self) -> None:
        self.detached = False
        frames = self._frames
        while self.bytes > self.window_bytes or len(frames) > self.window_frames:
            self.bytes -= len(frames.popleft())

    def __len__(self) -> int:
        return len(self._frames)


@dataclass
class ResumeCredential:
    """A conversation's resume secret: ``<session id>.<secret>`` handed out, a hash kept."""

    session_id: str
    identity_key: str
    digest: bytes = b""

    def prepare(self) -> tuple[str, bytes]:
        """A new token and its hash, to :meth:`adopt` once the client has it (an upgrade that
        fails after this must not have cost the client its old token)."""
        secret = secrets.token_urlsafe(TOKEN_BYTES)
        return f"{self.session_id}.{secret}", _digest(secret)

    def adopt(self, digest: bytes) -> None:
        """The token behind ``digest`` is the one from now on; any earlier one stops working."""
        self.digest = digest

    def check(self, secret: str, identity_key: str) -> str | None:
        """None if ``secret`` resumes this conversation for ``identity_key``; else why not
        (``wrong_token``, then ``wrong_identity``: a stolen token fails on its owner)."""
        if not (self.digest and hmac.compare_digest(self.digest, _digest(secret))):
            return "wrong_token"
        if not hmac.compare_digest(identity_key.encode(), self.identity_key.encode()):
            return "wrong_identity"
        return None


def split_token(token: str) -> tuple[str, str] | None:
    """``(session id, secret)`` of a resume token, or None when it is not shaped like one."""
    session_id, dot, secret = token.partition(".")
    if not dot or not session_id or len(secret) < TOKEN_BYTES:
        return None
    return session_id, secret


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


class SeenClientEvents:
    """Client event ids and item ids already forwarded upstream (the newest ``limit`` of each),
    to recognise what an app re-sends after a resume because it is unsure it arrived.

    Only a resume makes a repeat: an id seen on an earlier connection of the app, back within
    ``RESEND_WINDOW_S`` of the resume. Within one connection ids are the app's business (the API
    does not deduplicate them; some apps send every event under one fixed id), so a repeated id
    there is forwarded like any event, and a repeat is recognised once per resume.
    """

    RESEND_WINDOW_S = 10.0

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self.connection = 0  # the app's connections so far, less one
        self._resumed_at = float("-inf")
        self._event_ids: OrderedDict[str, int] = OrderedDict()  # -> the connection it came on
        self._item_ids: OrderedDict[str, int] = OrderedDict()

    def resumed(self, now: float) -> None:
        """The app came back on a new connection: what it sends now may be re-sent."""
        self.connection += 1
        self._resumed_at = now

    def repeated(self, event: dict[str, Any], now: float) -> bool:
        """True for an event re-sent after a resume (it is dropped); otherwise it is remembered."""
        event_id = event.get("event_id")
        item = event.get("item") if event.get("type") == "conversation.item.create" else None
        item_id = item.get("id") if isinstance(item, dict) else None
        current = self.connection
        earlier = now - self._resumed_at <= self.RESEND_WINDOW_S and (
            (isinstance(event_id, str) and self._event_ids.get(event_id, current) < current)
            or (isinstance(item_id, str) and self._item_ids.get(item_id, current) < current)
        )
        if isinstance(event_id, str):
            _remember(self._event_ids, event_id, current, self.limit)
        if isinstance(item_id, str):
            _remember(self._item_ids, item_id, current, self.limit)
        return earlier

    def remember_items(self, item_ids: list[str]) -> None:
        """Items the conversation already holds (a takeover's replay): a re-sent create of one of
        them is a repeat too."""
        for item_id in item_ids[-self.limit :]:
            _remember(self._item_ids, item_id, self.connection - 1, self.limit)


def _remember(seen: OrderedDict[str, int], key: str, connection: int, limit: int) -> None:
    seen[key] = connection
    seen.move_to_end(key)
    if len(seen) > limit:
        seen.popitem(last=False)
