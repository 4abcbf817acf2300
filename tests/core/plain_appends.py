"""Frames near the plain append's shape, for the fast path's tests: the forms apps send and every
small way to differ from them (key order, a repeated key, escapes, whitespace JSON allows and
whitespace it does not, bad base64, a null id)."""

from __future__ import annotations

import base64
import json

import orjson
from hypothesis import strategies as st

_b64 = st.one_of(
    st.binary(max_size=1500).map(lambda b: base64.b64encode(b).decode()),
    st.text(alphabet='ABCDabcd0189+/=\\"é ', max_size=40),  # not base64, or not as JSON has it
    st.just("AAAA").map(lambda s: s + "=="),  # padding after a whole quantum
)
_ids = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.text(max_size=6),  # control characters, non-ASCII: escaped by orjson
    st.text(alphabet="a", min_size=510, max_size=515),  # about the id length limit
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


# JSON's whitespace (often none), and two characters that are not JSON's: a vertical tab and a
# no-break space.
_space = st.sampled_from(["", "", "", "", " ", "  ", "\n  ", "\t", "\r\n", "\x0b", "\xa0"])


@st.composite
def append_like(draw: st.DrawFn) -> bytes:
    members: list[tuple[str, object]] = [("type", "input_audio_buffer.append"), ("audio", draw(_b64))]
    if draw(st.booleans()):
        members.insert(draw(st.integers(0, 2)), ("event_id", draw(_ids)))
    if draw(st.integers(0, 9)) == 0:  # a key twice, or another one
        members.append(draw(st.sampled_from([("audio", "AAAA"), ("event_id", "x"), ("type", "x"), ("x", 1)])))
    if draw(st.integers(0, 3)) == 0:
        members = draw(st.permutations(members))
    if draw(st.integers(0, 3)) == 0:  # between any two tokens

        def space() -> bytes:
            return draw(_space).encode()

    else:

        def space() -> bytes:
            return b""

    body = b",".join(
        space() + orjson.dumps(k) + space() + b":" + space() + orjson.dumps(v) + space() for k, v in members
    )
    frame = space() + b"{" + body + b"}" + space()
    edit = draw(st.integers(0, 7))
    if edit == 0:
        frame = frame.replace(b":", b": ", 1)
    elif edit == 1:
        frame = frame + b" "
    elif edit == 2:
        frame = frame.replace(b"/", b"\\/")  # a legal JSON escape inside the audio
    elif edit == 3:
        cut = draw(st.integers(0, len(frame)))
        frame = frame[:cut]
    elif edit == 4:  # Python's json.dumps, as the openai SDK sends it (its own escapes, its spaces)
        frame = json.dumps(dict(members)).encode()
    return frame
