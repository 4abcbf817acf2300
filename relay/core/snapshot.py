"""A conversation as another relay process needs it to carry on, sans I/O.

With shared state (``RELAY_REDIS_URL``) a client may resume on any process. The process that
takes the conversation over has none of its memory: it gets this snapshot (who the client is,
the resume credential's hash, the session's kind, the effective configuration and the
conversation as a replay would send it) and the server events the client may not have seen, and
from them opens a new upstream and replays, as the supervisor does after a drop.

What a takeover cannot carry: input audio not yet committed (the unfinished utterance) and a
response that was streaming (the old process ends it for the client with one ``response.done``
before it lets go; one the app had nothing of yet is asked for again on the new upstream). A
resume on the same process loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from relay.core.replay import encoded_replay_items, replay_config
from relay.core.session import SessionState, clone, interrupted_response_done

VERSION = 1


class SnapshotInvalid(ValueError):
    """Stored bytes that are not a snapshot this relay can use (another version, or corrupt)."""


@dataclass
class Snapshot:
    session_id: str
    identity_key: str
    digest: bytes  # the resume credential's hash (never the token itself)
    model: str | None
    intent: str = "realtime"
    beta: bool = False
    call_id: str | None = None
    first_session_id: str | None = None  # the upstream session id the client was shown
    config: dict[str, Any] = field(default_factory=dict)
    # Replayable, in conversation order: dicts once decoded; as captured, each already encoded
    # (orjson.Fragment), so that a snapshot taken several times a turn does not encode them again.
    items: list[Any] = field(default_factory=list)
    active_response: dict[str, Any] | None = None  # response.created's, while one streams
    # A response the old process cut before the app had any of it (a move mid-turn): the taking
    # process asks for it again with these parameters ({}: the session's own).
    ask_again: dict[str, Any] | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": VERSION,
                "session_id": self.session_id,
                "identity_key": self.identity_key,
                "digest": self.digest.hex(),
                "model": self.model,
                "intent": self.intent,
                "beta": self.beta,
                "call_id": self.call_id,
                "first_session_id": self.first_session_id,
                "config": self.config,
                "items": self.items,
                "active_response": self.active_response,
                "ask_again": self.ask_again,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        try:
            raw = orjson.loads(data)
            if not isinstance(raw, dict) or raw.get("v") != VERSION:
                raise SnapshotInvalid(f"snapshot version {raw.get('v') if isinstance(raw, dict) else '?'}")
            config, items = raw.get("config"), raw.get("items")
            if not isinstance(config, dict) or not isinstance(items, list):
                raise SnapshotInvalid("snapshot without config or items")
            return cls(
                session_id=str(raw["session_id"]),
                identity_key=str(raw["identity_key"]),
                digest=bytes.fromhex(str(raw["digest"])),
                model=_optional_str(raw.get("model")),
                intent=str(raw.get("intent") or "realtime"),
                beta=bool(raw.get("beta")),
                call_id=_optional_str(raw.get("call_id")),
                first_session_id=_optional_str(raw.get("first_session_id")),
                config=config,
                items=[item for item in items if isinstance(item, dict) and item.get("id")],
                active_response=_optional_dict(raw.get("active_response")),
                ask_again=_optional_dict(raw.get("ask_again")),
            )
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
            if isinstance(exc, SnapshotInvalid):
                raise
            raise SnapshotInvalid(f"corrupt snapshot: {type(exc).__name__}") from None


def capture(
    state: SessionState,
    *,
    max_items: int,
    max_tokens: int,
    user_audio: str,
) -> tuple[dict[str, Any], list[Any]]:
    """The configuration and the items a replay would send now (the replay budget bounds both
    what is stored and what a takeover replays); the items already encoded, for ``encode``."""
    items = encoded_replay_items(state, max_items=max_items, max_tokens=max_tokens, user_audio=user_audio)
    return replay_config(state), items


def restore(state: SessionState, snapshot: Snapshot) -> None:
    """Give a fresh state the snapshot's configuration and conversation, for the replay."""
    state.set_config({"session": dict(snapshot.config)})
    state.replace_items([dict(item) for item in snapshot.items])


def unfinished_response(frames: list[bytes], snapshot: Snapshot) -> dict[str, Any] | None:
    """The ``response.done`` a client still needs when its old process died while an answer
    streamed: from the log, with the partial output as the user heard it; else from the
    snapshot, when the log (only written while the client was away) never saw the answer end."""
    active = snapshot.active_response
    if active is not None and not any(
        b'"response.done"' in frame[:96] and str(active.get("id")).encode() in frame for frame in frames
    ):
        scratch = SessionState()
        scratch.active_response = clone(active)
        if not any(b'"response.created"' in frame[:96] for frame in frames):
            return interrupted_response_done(scratch, "upstream_replaced")
    started = None
    for index, frame in enumerate(frames):
        head = frame[:96]
        if b'"response.created"' in head:
            started = index
        elif b'"response.done"' in head:
            started = None
    if started is None:
        return None
    scratch = SessionState()
    for frame in frames[started:]:
        if b'"response.output_audio.delta"' in frame[:96] or b'"response.audio.delta"' in frame[:96]:
            continue
        event = orjson.loads(frame)
        if isinstance(event, dict):
            scratch.on_server_event(event)
    return interrupted_response_done(scratch, "upstream_replaced")


def keep_partial_output(state: SessionState, done: dict[str, Any]) -> None:
    """What the user heard of a cut response stays in the conversation (and in the replay)."""
    response = done.get("response")
    for item in response.get("output") or [] if isinstance(response, dict) else []:
        if isinstance(item, dict) and item.get("id") and state.find(item["id"]) is None:
            state.keep_item(clone(item))


def _optional_dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
