"""Bounds on client events, checked before they can cost the relay memory or time.

A frame is bytes until something parses it, and parsing is where one message can grow a
thousandfold: 8 MiB of empty arrays become millions of Python lists, and each list that fails
validation one more pydantic error. So, in order:

1. **size per event type**, from the type in the frame's first bytes (``peek_type``), before any
   parse: only the events that carry audio (up to 15 MiB, ~20 MiB in base64) may be large;
2. **structure**, for frames that are large enough to matter, still before the parse: at most
   :data:`MAX_JSON_VALUES` values, counted with ``bytes.count`` (C, ~2 GB/s, no parse);
3. after the parse, before anything walks the event: nesting depth, keys per object, and no key
   twice in one object (the relay reads the last value, the API may read the first).

The limits are generous next to what real events need (measured on the recorded sessions and a
session.update with 128 function tools with nested schemas: 4,099 containers, 8,967 values,
depth 14, 168 KB); see each constant.
"""

from __future__ import annotations

import json
from typing import Any, Final

from relay.core.errors import duplicate_key, event_too_complex, event_too_large
from relay.core.protocol import MAX_EVENT_ID_LENGTH

# --- 1. size per event type --------------------------------------------------------------------
# Events that may carry up to 15 MiB of audio (base64: 20 MiB, plus JSON): the transport's own
# limit (RELAY_MAX_MESSAGE_BYTES, 24 MiB) is theirs.
LARGE_EVENT_TYPES: Final = frozenset(
    {
        "input_audio_buffer.append",
        "session.input_audio_buffer.append",
        "conversation.item.create",
        "response.create",
    }
)
# Instructions and up to 128 tools with JSON schemas: 168 KB for a large one (24 KB of
# instructions, 128 nested schemas); 4 MiB leaves a wide margin.
SESSION_EVENT_TYPES: Final = frozenset({"session.update", "transcription_session.update"})
SESSION_EVENT_BYTES: Final = 4 * 1024 * 1024
# Everything else (commit, clear, cancel, delete, truncate, retrieve, close; unknown types while
# validating) is an id or two: under 1 KB, with a 512-character event_id.
SMALL_EVENT_BYTES: Final = 64 * 1024

# --- 2. structure, before the parse ------------------------------------------------------------
# Below this size a frame cannot hold enough values to matter (at most ~32K, a few MB parsed).
STRUCTURE_CHECK_BYTES: Final = 64 * 1024
# JSON values (array elements and object members): each costs 50-250 bytes once parsed, so
# this bounds a parsed event to ~16 MB. Counted as 1 + ',' + '[' + '{', an upper bound (those
# bytes inside strings count too): prose has one every 20-80 characters, so a text would need
# 1-5 MB, far past any model's context window, to be refused for them.
MAX_JSON_VALUES: Final = 65_536

# --- 3. after the parse --------------------------------------------------------------------------
# Nesting: 14 for nested tool schemas. orjson parses 1,024 deep but writes only 255 deep (a
# policy rewrite would fail), and stdlib json recurses in C: 64 keeps all of them safe.
MAX_DEPTH: Final = 64
# Keys in one object: the schemas have at most ~30 fields, JSON Schema ``properties`` a few
# dozen. pydantic reports every unknown key of an object as one more error; this bounds them.
MAX_OBJECT_KEYS: Final = 256

_EVENT_ID = b'"event_id":"'


def size_limit(event_type: str | None, max_bytes: int, *, validating: bool = True) -> int:
    """The largest frame accepted for ``event_type`` (None: not known before the parse)."""
    if event_type is None or event_type in LARGE_EVENT_TYPES:
        return max_bytes
    if event_type in SESSION_EVENT_TYPES:
        return min(SESSION_EVENT_BYTES, max_bytes)
    if not validating and event_type not in _KNOWN_SMALL_TYPES:
        return max_bytes  # an event type the relay does not know is passed on, whatever its size
    return min(SMALL_EVENT_BYTES, max_bytes)


_KNOWN_SMALL_TYPES: Final = frozenset(
    {
        "session.close",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
        "conversation.item.truncate",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "response.cancel",
    }
)


def check_size(data: bytes, event_type: str | None, limit: int) -> None:
    if len(data) > limit:
        raise event_too_large(event_type, len(data), limit, peek_event_id(data))


def check_values(data: bytes) -> None:
    """Refuse a frame holding more than :data:`MAX_JSON_VALUES` values, without parsing it."""
    values = 1 + data.count(b",") + data.count(b"[") + data.count(b"{")
    if values > MAX_JSON_VALUES:
        raise event_too_complex(
            f"holds up to {values} JSON values (one per ',', '[' and '{{'); "
            f"the relay accepts up to {MAX_JSON_VALUES}",
            peek_event_id(data),
        )


def check_parsed(data: bytes, event: dict[str, Any]) -> None:
    """Depth, keys per object and duplicate keys of a parsed event (``data`` its frame).

    A duplicate is invisible in the parsed event (orjson keeps the last value), so it is found
    by counting strings: every '"' in the frame that is not escaped delimits a key or a string
    value, and the parsed event holds all of them unless a key came twice. Without ``\\\\`` in
    the frame every backslash opens an escape, so the escaped quotes are its ``\\"``; frames with
    an escaped backslash (rare: paths, code) are read again by the stdlib parser, object by object.
    """
    strings = _walk(event)
    quotes = data.count(b'"')
    if b"\\" in data:
        quotes = -1 if b"\\\\" in data else quotes - data.count(b'\\"')
    if quotes == 2 * strings:
        return
    event_id = event.get("event_id")
    try:
        json.loads(data, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as exc:
        raise duplicate_key(exc.key, event_id if isinstance(event_id, str) else None) from None
    except ValueError:  # not JSON for the stdlib (orjson read it): nothing is known to be wrong
        return


def plain_append(data: bytes, event: dict[str, Any]) -> bool:
    """True for an append the schema accepts as it is (only ``type``, ``audio``, maybe
    ``event_id``, each well typed) whose frame cannot hold a key twice. False: not shown;
    :func:`check_parsed` and the validator decide.

    A 20 ms append is 98% of client frames, so this is arithmetic, not a scan: the shortest
    JSON text of these members is known from their lengths (escapes, non-ASCII and whitespace
    only lengthen it), and a duplicate costs at least :data:`SMALLEST_DUPLICATE` bytes more, so
    a frame less than that over the shortest has none. Compact frames (JSON.stringify, orjson)
    are 0 over, ``json.dumps``' spaces 3-5. ``event["type"]`` is the caller's to check.
    """
    audio = event.get("audio")
    if type(audio) is not str:
        return False
    extra = len(data) - len(audio) - APPEND_SHORTEST
    members = len(event)
    if members == 3:  # type, audio and one more, which must be the event_id
        event_id = event.get("event_id", False)
        if event_id is None:
            extra -= EVENT_ID_MEMBER + 2  # null: two bytes more than ""
        elif type(event_id) is str and len(event_id) <= MAX_EVENT_ID_LENGTH:
            extra -= EVENT_ID_MEMBER + len(event_id)
        else:
            return False
    elif members != 2:  # two: type and audio
        return False
    return 0 <= extra < SMALLEST_DUPLICATE


APPEND_SHORTEST: Final = len(b'{"type":"input_audio_buffer.append","audio":""}')
EVENT_ID_MEMBER: Final = len(b',"event_id":""')
SMALLEST_DUPLICATE: Final = len(b',"type":0')  # a member again: comma, key, colon, value


def peek_event_id(data: bytes) -> str | None:
    """The client's event_id for an error about a frame that was not parsed, if it is near the
    start where SDKs put it (errors name it so the client can match them)."""
    start = data.find(_EVENT_ID, 0, 1024)
    if start < 0:
        return None
    start += len(_EVENT_ID)
    end = data.find(b'"', start, start + 513)
    value = data[start:end] if end > 0 else b""
    if not value or b"\\" in value:
        return None
    return value.decode("utf-8", "replace")


def _walk(event: dict[str, Any]) -> int:
    """The number of keys and string values in ``event``; raises if too deep or too wide.
    Level by level: no per-node bookkeeping (0.6 ms for the 128-tool session.update)."""
    strings = 0
    depth = 1
    level: list[Any] = [event]
    while level:
        if depth > MAX_DEPTH:
            raise event_too_complex(f"nests deeper than {MAX_DEPTH} levels", _event_id(event))
        below: list[Any] = []
        for node in level:
            if type(node) is dict:
                if len(node) > MAX_OBJECT_KEYS:
                    raise event_too_complex(
                        f"has an object with {len(node)} keys; the relay accepts up to {MAX_OBJECT_KEYS}",
                        _event_id(event),
                    )
                strings += len(node)
                node = node.values()
            for child in node:
                kind = type(child)
                if kind is str:
                    strings += 1
                elif kind is dict or kind is list:
                    below.append(child)
        level = below
        depth += 1
    return strings


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len(dict(pairs)) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return None  # only the check matters: no object is built


def _event_id(event: dict[str, Any]) -> str | None:
    value = event.get("event_id")
    return value if isinstance(value, str) else None
