"""Bounds on client events: what real events need passes, absurd structures are refused cheaply,
and no key can appear twice in an event the relay forwards."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core import bounds
from relay.core.errors import InvalidEvent
from tests.support.recordings import load, recording_files

MAX = 24 * 1024 * 1024


def large_session_update() -> dict[str, Any]:
    """A large legal session.update: 24 KB of instructions and 128 function tools, each with a
    nested JSON schema (objects in objects, arrays of objects, enums)."""

    def tool(i: int) -> dict[str, Any]:
        number = {"type": "number"}
        return {
            "type": "function",
            "name": f"tool_{i}",
            "description": "Look up things in the catalogue.\nReturns matching rows. " * 4,
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": 'What to look for, e.g. "red shoes".'},
                    "filters": {
                        "type": "object",
                        "properties": {
                            "category": {"type": "string", "enum": ["a", "b", "c", "d"]},
                            "price": {"type": "object", "properties": {"min": number, "max": number}},
                            "tags": {"type": "array", "items": {"type": "string"}},
                            "location": {
                                "type": "object",
                                "properties": {
                                    "lat": number,
                                    "lon": number,
                                    "radius": {
                                        "type": "object",
                                        "properties": {
                                            "value": number,
                                            "unit": {"type": "string", "enum": ["km", "mi"]},
                                        },
                                    },
                                },
                            },
                        },
                    },
                    "sort": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "field": {"type": "string"},
                                "order": {"type": "string", "enum": ["asc", "desc"]},
                            },
                            "required": ["field"],
                        },
                    },
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
        }

    return {
        "type": "session.update",
        "event_id": "event_large_update",
        "session": {
            "type": "realtime",
            "instructions": "Be helpful and brief.\n" * 1100,
            "tools": [tool(i) for i in range(128)],
        },
    }


def _structure(data: bytes) -> tuple[int, int]:
    """(values as counted by the bound, nesting depth) of a frame."""
    depth = deepest = 0
    for byte in data:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return 1 + data.count(b",") + data.count(b"[") + data.count(b"{"), deepest


def _refused(call: Any, *args: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        call(*args)
    return caught.value


# ---------------------------------------------------------------------------------- what real events need
def test_real_events_are_far_inside_every_bound() -> None:
    """The measurement the limits were chosen from: every recorded client frame and a large
    session.update (128 tools with nested schemas) pass, with a wide margin to each limit."""
    frames = [orjson.dumps(i["data"]) for p in recording_files() for i in load(p) if i["direction"] == "sent"]
    large = orjson.dumps(large_session_update())
    for frame in [*frames, large]:
        event = orjson.loads(frame)
        bounds.check_values(frame)
        bounds.check_parsed(frame, event)
        assert len(frame) <= bounds.size_limit(event["type"], MAX)
    recorded = max(_structure(f)[0] for f in frames)
    values, depth = _structure(large)
    assert recorded < 64
    assert (values, depth) == (8967, 14)
    assert values * 7 < bounds.MAX_JSON_VALUES
    assert depth * 4 < bounds.MAX_DEPTH
    assert len(large) * 20 < bounds.SESSION_EVENT_BYTES  # 168 KB of the 4 MiB


@pytest.mark.parametrize(
    ("event_type", "validating", "limit"),
    [
        ("input_audio_buffer.append", True, MAX),
        ("conversation.item.create", True, MAX),
        ("response.create", True, MAX),
        ("session.update", True, 4 * 1024 * 1024),
        ("input_audio_buffer.commit", True, 64 * 1024),
        ("response.cancel", False, 64 * 1024),
        ("nope", True, 64 * 1024),  # refused anyway while validating: no need to read 24 MiB of it
        ("a.future.event", False, MAX),  # passed on unknown when validation is off
        (None, True, MAX),  # not known before the parse: checked again after it
    ],
)
def test_size_limits_per_event_type(event_type: str | None, validating: bool, limit: int) -> None:
    assert bounds.size_limit(event_type, MAX, validating=validating) == limit
    assert bounds.size_limit(event_type, 4096, validating=validating) == 4096  # never above the transport's


def test_a_frame_over_its_types_limit_is_refused_with_the_limit_named() -> None:
    frame = b'{"type":"input_audio_buffer.commit","event_id":"c1","pad":"' + b"x" * 70_000 + b'"}'
    error = _refused(bounds.check_size, frame, "input_audio_buffer.commit", 65536)
    assert (error.code, error.client_event_id) == ("event_too_large", "c1")
    assert "'input_audio_buffer.commit' events of up to 65536 bytes" in error.message
    assert f"this one has {len(frame)} bytes" in error.message


# ------------------------------------------------------------------------- structure before the parse
def test_millions_of_empty_arrays_are_refused_without_a_parse_in_milliseconds() -> None:
    frame = (
        b'{"type":"conversation.item.create","item":{"type":"message","role":"user","content":['
        + b"[]," * 2_800_000
        + b"[]]}}"
    )
    started = time.perf_counter()
    error = _refused(bounds.check_values, frame)
    assert time.perf_counter() - started < 0.5  # measured: ~15 ms
    assert error.code == "event_too_complex"
    assert "holds up to 5600008 JSON values" in error.message
    assert "up to 65536" in error.message


def test_a_long_text_passes_though_its_commas_count() -> None:
    """Commas and brackets inside strings are counted too (no parse, no scan of the strings): a
    text needs megabytes of prose, far past any model's context window, to be refused for them.
    This one, a 1 MB text with a separator every 21 characters, passes."""
    text = 'Hello, world: a sentence of prose (with a "quote"), and [brackets], ~80 characters. ' * 12_500
    frame = orjson.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )
    assert len(frame) > 1_000_000
    bounds.check_values(frame)


# ---------------------------------------------------------------------------------- after the parse
def test_nesting_deeper_than_the_limit_is_refused() -> None:
    deep = {"type": "session.update", "session": {"tools": [{"parameters": {}}]}}
    node = deep["session"]["tools"][0]["parameters"]
    for _ in range(bounds.MAX_DEPTH):
        node["x"] = {}
        node = node["x"]
    frame = orjson.dumps(deep)
    error = _refused(bounds.check_parsed, frame, orjson.loads(frame))
    assert error.code == "event_too_complex"
    assert "deeper than 64" in error.message


def test_an_object_with_too_many_keys_is_refused() -> None:
    event = {"type": "response.cancel", **{f"k{i}": 1 for i in range(300)}}
    error = _refused(bounds.check_parsed, orjson.dumps(event), event)
    assert error.code == "event_too_complex"
    assert "an object with 301 keys" in error.message


DUPLICATES = [
    # the case that bypassed the policy: the forbidden value first, the harmless one last
    b'{"type":"session.update","session":{"type":"realtime","tools":[{"type":"mcp"}]},'
    b'"session":{"type":"realtime"}}',
    b'{"type":"session.update","session":{"type":"realtime","instructions":"a","instructions":"b"}}',
    b'{"type":"response.create","response":{"input":[{"type":"message","role":"user","role":"x"}]}}',
    b'{"type":"response.cancel","type":"response.cancel"}',
    b'{"type": "input_audio_buffer.commit", "event_id": "e", "event_id": "f"}',
    # with escapes: read again by the stdlib parser
    b'{"type":"session.update","session":{"instructions":"line\\n\\"two\\"","instructions":""}}',
    b'{"type":"session.update","session":{"k\\u0065y":1,"key":2}}',  # the same key, spelled twice
    b'{"type":"session.update","session":{"instructions":"C:\\\\","instructions":"x"}}',  # \\ then "
]


@pytest.mark.parametrize("frame", DUPLICATES)
def test_duplicate_keys_at_any_level_are_refused(frame: bytes) -> None:
    error = _refused(bounds.check_parsed, frame, orjson.loads(frame))
    assert error.code == "duplicate_key"
    assert "appears more than once in the same object" in error.message


def test_the_duplicate_key_is_named_and_the_event_id_kept() -> None:
    frame = b'{"type":"session.update","event_id":"e9","session":{"a":1},"session":{"b":2}}'
    error = _refused(bounds.check_parsed, frame, orjson.loads(frame))
    assert (error.message, error.client_event_id) == (
        "Invalid event: the key 'session' appears more than once in the same object.",
        "e9",
    )


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"session.update","session":{"instructions":"say \\"hi\\", then \\\\ and \\u0022"}}',
        b'{"type":"conversation.item.create","item":{"content":[{"text":"\\"a\\":1,\\"a\\":2"}]}}',
        b'{"type":"session.update","session":{"a":{"x":1},"b":{"x":1},"c":[{"x":1},{"x":2}]}}',
        '{"type":"session.update","session":{"instructions":"Grüße, ça va? 日本語"}}'.encode(),
    ],
)
def test_the_same_key_in_different_objects_or_inside_strings_is_no_duplicate(frame: bytes) -> None:
    bounds.check_parsed(frame, orjson.loads(frame))


# ---------------------------------------------------------------------------------- the append's quick check
def _append(audio: str, event_id: str | None = None, *, spaced: bool = False) -> bytes:
    members = {"type": "input_audio_buffer.append", "audio": audio}
    if event_id is not None:
        members["event_id"] = event_id
    return json.dumps(members).encode() if spaced else orjson.dumps(members)


@pytest.mark.parametrize(
    "frame",
    [
        _append("AAAA"),
        _append("AAAA", "event_1"),
        _append("AAAA", spaced=True),
        _append("AAAA", "event_1", spaced=True),
        _append(base64.b64encode(os.urandom(960)).decode(), "e"),
        b'{"event_id":null,"type":"input_audio_buffer.append","audio":"AAAA"}',
    ],
)
def test_plain_appends_are_shown_unique_by_their_length(frame: bytes) -> None:
    assert bounds.plain_append(frame, orjson.loads(frame))


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"input_audio_buffer.append","audio":"AAAA","audio":"BBBB"}',
        b'{"type":"session.update","type":"input_audio_buffer.append","audio":"AAAA"}',
        b'{"type":1,"type":"input_audio_buffer.append","event_id":null,"audio":"AAAA"}',
        # the audio value's length chosen to line a quote up where the real audio ends
        b'{"type":"input_audio_buffer.append","audio":"AB","event_id": null,"audio":"' + b"A" * 28 + b'"}',
        b'{"type":"input_audio_buffer.append","audio":"A","event_id":"xx","event_id":"yyyy"}',
    ],
)
def test_appends_with_a_key_twice_are_never_shown_unique(frame: bytes) -> None:
    event = orjson.loads(frame)
    assert not bounds.plain_append(frame, event)
    assert _refused(bounds.check_parsed, frame, event).code == "duplicate_key"


_keys = st.sampled_from(["type", "audio", "event_id"])
_values = st.one_of(st.text(max_size=8), st.none(), st.integers(), st.just({"audio": "x"}))


@settings(max_examples=1000, deadline=None)
@given(
    extra=st.lists(st.tuples(_keys, _values), max_size=4),
    audio=st.text(alphabet="AB+/=", max_size=40),
    event_id=st.one_of(st.none(), st.text(max_size=12)),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (",\n  ", " : ")]),
    order=st.randoms(use_true_random=False),
)
def test_the_quick_check_never_passes_a_duplicate(
    extra: list[tuple[str, Any]],
    audio: str,
    event_id: str | None,
    separators: tuple[str, str],
    order: Any,
) -> None:
    """An append's members and more of the same keys, in any order: whenever the quick check
    passes a frame, no key is in it twice; the full check refuses every duplicate."""
    pairs = [("type", "input_audio_buffer.append"), ("audio", audio), *extra]
    if event_id is not None:
        pairs.append(("event_id", event_id))
    order.shuffle(pairs)
    comma, colon = separators
    frame = ("{" + comma.join(json.dumps(k) + colon + json.dumps(v) for k, v in pairs) + "}").encode()
    event = orjson.loads(frame)
    duplicated = len({k for k, _ in pairs}) != len(pairs)
    if event.get("type") == "input_audio_buffer.append" and bounds.plain_append(frame, event):
        assert not duplicated, frame
    if duplicated:
        assert _refused(bounds.check_parsed, frame, event).code == "duplicate_key"
    else:
        bounds.check_parsed(frame, event)


@pytest.mark.parametrize(
    "event",
    [
        {"type": "input_audio_buffer.append", "audio": 1},
        {"type": "input_audio_buffer.append"},
        {"type": "input_audio_buffer.append", "audio": "", "event_id": 7},
        {"type": "input_audio_buffer.append", "audio": "", "event_id": "e" * 513},
        {"type": "input_audio_buffer.append", "audio": "", "extra": 1},
    ],
)
def test_appends_the_schema_would_refuse_are_not_plain(event: dict[str, Any]) -> None:
    assert not bounds.plain_append(orjson.dumps(event), event)


def test_the_event_id_of_an_unparsed_frame_is_read_from_its_start() -> None:
    assert bounds.peek_event_id(b'{"type":"x","event_id":"evt_1","a":1}') == "evt_1"
    assert bounds.peek_event_id(b'{"type":"x","a":"' + b"z" * 2000 + b'","event_id":"late"}') is None
    assert bounds.peek_event_id(b'{"type":"x","event_id":"a\\"b"}') is None
    assert bounds.peek_event_id(b'{"type":"x","event_id":"' + b"e" * 600) is None
