"""The compiled build against its pure-Python twins: the same input must give the same output.

The rest of the suite runs whichever build is active (CI runs it on both); this file runs both
side by side on arbitrary input, hostile frames included, so a difference shows here first.
"""

from __future__ import annotations

import array
import importlib
import math
import os
import struct
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core import speedups
from relay.core.audio import py_decode_plain_append, py_looks_like_float32
from relay.core.websocket import (
    FRAGMENT_COST,
    MAX_FRAGMENTS,
    OP_BINARY,
    OP_TEXT,
    ProtocolError,
    PyFrameReader,
    py_encode_frame,
)
from tests.core.plain_appends import append_like


def _compiled() -> ModuleType:
    if speedups.NO_EXTENSIONS:
        pytest.skip("RELAY_NO_EXTENSIONS is set: this run is the pure-Python build's")
    module = speedups.compiled()
    if module is None:  # RELAY_REQUIRE_EXTENSIONS (set by CI) turns this into an import error
        pytest.skip("the compiled build is not installed (no C compiler at install time?)")
    return module


def _run(reader: object, chunks: list[bytes]) -> tuple[list[object], object]:
    """Every message out of ``chunks``, and the error that ended them (as comparable values)."""
    out: list[object] = []
    for chunk in chunks:
        try:
            out.extend(reader.feed(chunk))  # type: ignore[attr-defined]
        except ProtocolError as exc:
            return out + exc.messages, (exc.code, exc.reason)
    return out, None


def _frame(first: int, payload: bytes, masked: bool, key: bytes, length_form: int) -> bytes:
    """Any frame, well formed or not: ``length_form`` picks the (possibly non-minimal) length."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if length_form == 0 and size < 126:
        head = bytes([first, mask_bit | size])
    elif length_form <= 1 and size < 65536:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


texts = st.text(max_size=100).map(str.encode)
broken_texts = st.sampled_from([b"\xc3", b"\xa9", b"\xed\xa0\x80", b"\xff", b"ok\xf4\x90\x80\x80"])
payloads = st.one_of(st.binary(max_size=300), texts, broken_texts)


@st.composite
def streams(draw: st.DrawFn, masked: bool) -> bytes:
    """Frames as a peer on the other side sends them, mostly well formed: whole messages, messages
    in fragments with control frames between, and now and then a frame that breaks a rule."""
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        shape = draw(st.sampled_from(["whole", "whole", "fragments", "control", "any"]))
        if shape == "fragments":
            opcode = draw(st.sampled_from([0x1, 0x2]))
            piece = texts if opcode == 0x1 and draw(st.integers(0, 9)) else payloads
            pieces = draw(st.lists(piece, min_size=1, max_size=4))
            firsts = [opcode] + [0x0] * (len(pieces) - 1)
            firsts[-1] |= 0x80
            if draw(st.booleans()):  # a ping between two fragments
                pieces.insert(1, b"ping")
                firsts.insert(1, 0x89)
        elif shape == "control":
            firsts, pieces = [draw(st.sampled_from([0x88, 0x89, 0x8A]))], [draw(st.binary(max_size=130))]
        elif shape == "any":
            firsts, pieces = [draw(st.integers(min_value=0, max_value=255))], [draw(payloads)]
        else:
            first = draw(st.sampled_from([0x81, 0x82]))
            firsts = [first]
            pieces = [draw(texts if first == 0x81 and draw(st.integers(0, 9)) else payloads)]
        for first, piece in zip(firsts, pieces, strict=True):
            wrong_side = draw(st.integers(min_value=0, max_value=30)) == 0
            key = draw(st.binary(min_size=4, max_size=4))
            form = draw(st.integers(min_value=0, max_value=2))
            out.append(_frame(first, piece, masked != wrong_side, key, form))
    return b"".join(out)


def _cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


@settings(max_examples=400, deadline=None)
@given(
    data=st.data(),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=10),
    masked=st.booleans(),
    max_size=st.sampled_from([5, 125, 300, 2000, 1 << 20]),
    max_fragments=st.sampled_from([2, 3, MAX_FRAGMENTS]),
)
def test_the_compiled_reader_reads_any_stream_as_the_python_one(
    data: st.DataObject, cuts: list[int], masked: bool, max_size: int, max_fragments: int
) -> None:
    compiled = _compiled()
    chunks = _cut(data.draw(streams(masked)), cuts)
    options = {"masked": masked, "max_size": max_size, "max_fragments": max_fragments}
    expected = _run(PyFrameReader(**options), chunks)  # type: ignore[arg-type]
    assert _run(compiled.FrameReader(**options), chunks) == expected


def test_the_compiled_reader_has_the_same_defaults() -> None:
    reader = _compiled().FrameReader(masked=True, max_size=10)
    assert (reader.max_fragments, reader.fragment_cost) == (MAX_FRAGMENTS, FRAGMENT_COST)


_SIZES = [0, 1, 7, 8, 9, 125, 126, 65535, 65536, 200_001]


@pytest.mark.parametrize(
    ("size", "opcode"),
    [(size, op) for size in _SIZES for op in (OP_TEXT, OP_BINARY)] + [(0, 0x9), (125, 0x9)],
)
def test_the_compiled_writer_writes_the_same_frames(size: int, opcode: int) -> None:
    compiled = _compiled()
    payload = os.urandom(size)
    if opcode == OP_TEXT:
        payload = payload.translate(bytes(range(128)) * 2)  # ASCII: a text frame must be UTF-8
    assert compiled.encode_frame(payload, opcode) == py_encode_frame(payload, opcode)
    # Masked: the key is random, so the frame is compared through a reader, and the header whole.
    frame, reference = (
        compiled.encode_frame(payload, opcode, mask=True),
        py_encode_frame(payload, opcode, mask=True),
    )
    head = len(reference) - size - 4
    assert len(frame) == len(reference)
    assert frame[:head] == reference[:head]
    assert PyFrameReader(masked=True, max_size=1 << 20).feed(frame) == [(opcode, payload)]


def test_the_compiled_writer_draws_a_new_mask_key_each_frame() -> None:
    compiled = _compiled()
    keys = {compiled.encode_frame(b"x" * 10, mask=True)[2:6] for _ in range(1000)}
    assert len(keys) > 990  # 32-bit keys: a repeat among 1000 is rare, many would be a bug


def _pcm16(samples: list[int]) -> bytes:
    return array.array("h", samples).tobytes()


def _float32(samples: list[float]) -> bytes:
    return array.array("f", samples).tobytes()


audio = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.integers(min_value=-32768, max_value=32767), max_size=600).map(_pcm16),
    st.lists(st.floats(min_value=-1, max_value=1, width=32), max_size=400).map(_float32),
    st.lists(st.sampled_from([0.0, 0.5, -0.25, 1e-9, 2.0]), max_size=400).map(_float32),
)


@settings(max_examples=500, deadline=None)
@given(pcm=audio, lead=st.integers(min_value=0, max_value=3))
def test_the_compiled_float32_check_judges_as_the_python_one(pcm: bytes, lead: int) -> None:
    compiled = _compiled()
    shifted = b"\x01" * lead + pcm
    assert compiled.looks_like_float32(shifted) == py_looks_like_float32(shifted)


def test_the_float32_check_is_not_trivially_false_in_either_build() -> None:
    compiled = _compiled()
    tone = _float32([0.5 * math.sin(i / 5) for i in range(480)])
    speech = _pcm16([int(12000 * math.sin(i / 7)) for i in range(480)])
    assert compiled.looks_like_float32(tone)
    assert py_looks_like_float32(tone)
    assert not compiled.looks_like_float32(speech)
    assert not py_looks_like_float32(speech)


def test_the_active_build_is_the_one_asked_for() -> None:
    """CI sets RELAY_REQUIRE_EXTENSIONS for the compiled run and RELAY_NO_EXTENSIONS for the
    other: this says each run tested the build it claims to."""
    from relay.core.websocket import FrameReader
    from relay.io.frame_path import FramePath, PyFramePath

    # The modules compiled from their own .py: which file each was imported from.
    from_sources = {name: speedups.is_extension(importlib.import_module(name)) for name in speedups.PURE_MODE}
    if speedups.NO_EXTENSIONS:
        assert FrameReader is PyFrameReader
        assert FramePath is PyFramePath
        assert not any(from_sources.values())
        assert speedups.build() == "python"
    elif speedups.REQUIRE_EXTENSIONS:
        assert FrameReader is not PyFrameReader
        assert FramePath is not PyFramePath
        assert all(from_sources.values())
        assert speedups.build() == "compiled"
    else:
        assert speedups.build() == ("python" if FrameReader is PyFrameReader else "compiled")


@settings(max_examples=800, deadline=None)
@given(frame=append_like())
def test_the_compiled_plain_append_shortcut_decides_as_the_python_one(frame: bytes) -> None:
    compiled = _compiled()
    assert compiled.decode_plain_append(frame) == py_decode_plain_append(frame)
