"""Cheap looks at raw frames, for the per-frame hot path.

The API (and the SDKs) put ``"type"`` first in every event, so the type can be read from the
first bytes without parsing a 20 KB audio delta. When the shortcut does not apply, callers parse.
"""

from __future__ import annotations

from typing import Any

import orjson

_TYPE_PREFIXES = (b'{"type":"', b'{"type": "')


def peek_type(data: bytes) -> str | None:
    """The event type if ``data`` starts with a ``"type"`` member, else None."""
    for prefix in _TYPE_PREFIXES:
        if data.startswith(prefix):
            start = len(prefix)
            end = data.find(b'"', start, start + 80)
            if end > start:
                return data[start:end].decode("ascii", "replace")
    return None


def event_type_of(data: bytes) -> tuple[str, dict[str, Any] | None]:
    """The type, parsing only when the prefix shortcut fails (returns the parsed event then)."""
    peeked = peek_type(data)
    if peeked is not None:
        return peeked, None
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "invalid", None
    if not isinstance(event, dict):
        return "invalid", None
    event_type = event.get("type")
    return (event_type if isinstance(event_type, str) else "invalid"), event


def delta_chars(data: bytes) -> int:
    """The length of an audio delta's base64 payload, found without parsing the frame."""
    start = data.find(b'"delta":"')
    if start < 0:
        return 0
    start += 9
    end = data.find(b'"', start)
    return end - start if end > start else 0


def dumps(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)
