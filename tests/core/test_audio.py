"""Audio checks: strict base64, whole samples, commit accounting, the float32 detector (F5, F6)."""

from __future__ import annotations

import base64
import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.realtime import InputAudioBufferAppendEvent

from relay.core import speedups
from relay.core.audio import (
    AudioAccount,
    InputAudioCheck,
    check_append,
    decode_plain_append,
    encoding_of,
    looks_like_float32,
    py_decode_compact_append,
    py_decode_plain_append,
)
from relay.core.errors import InvalidEvent
from relay.core.protocol import Interface
from relay.io.inbound import ClientEventChecker
from relay.settings import load_settings
from tests.core.plain_appends import append_like
from tests.support.speech import speech_pcm16

RATE = 24000
_SETTINGS = load_settings(client_tokens=["test-token"])


def _signals() -> dict[str, np.ndarray]:
    """Test signals in [-1, 1]: real speech, music-like tones, noise and near-silence."""
    t = np.arange(RATE) / RATE
    rng = np.random.default_rng(7)
    speech = np.frombuffer(speech_pcm16("The quick brown fox jumps over the lazy dog."), "<i2") / 32768
    chord = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))
    return {
        "speech": speech,
        "chord": chord,
        "loud_tone": 0.98 * np.sin(2 * np.pi * 1000 * t),
        "quiet_tone": 0.01 * np.sin(2 * np.pi * 440 * t),
        "white_noise": np.clip(0.3 * rng.standard_normal(RATE), -1, 1),
        "noise_floor": 0.0003 * rng.standard_normal(RATE),
    }


def _pcm16(signal: np.ndarray) -> bytes:
    return (np.clip(signal, -1, 1) * 32767).round().astype("<i2").tobytes()


def _float32(signal: np.ndarray) -> bytes:
    return np.clip(signal, -1, 1).astype("<f4").tobytes()


def test_float32_detector_confusion_matrix() -> None:
    matrix = {"pcm16": {"flagged": 0, "passed": 0}, "float32": {"flagged": 0, "passed": 0}}
    for signal in _signals().values():
        for chunk_ms in (20, 100, 1000):
            size = chunk_ms * 24
            for start in range(0, len(signal) - size, size * 3):
                piece = signal[start : start + size]
                if np.count_nonzero(piece) < len(piece) * 0.1:
                    continue  # digital silence: the same bytes in both formats, nothing to tell
                matrix["pcm16"]["flagged" if looks_like_float32(_pcm16(piece)) else "passed"] += 1
                matrix["float32"]["flagged" if looks_like_float32(_float32(piece)) else "passed"] += 1
    print(f"\nfloat32 detector confusion matrix: {matrix}")
    assert matrix["pcm16"]["flagged"] == 0, "false positives on real PCM16"
    assert matrix["float32"]["passed"] == 0, "float32 data let through"
    assert matrix["pcm16"]["passed"] > 100


def test_check_append() -> None:
    assert check_append(base64.b64encode(b"\x01\x02" * 480).decode(), "pcm16", None) == 960
    with pytest.raises(InvalidEvent) as caught:
        check_append("not base64!", "pcm16", "e1")
    assert (caught.value.code, caught.value.param, caught.value.client_event_id) == (
        "invalid_value",
        "audio",
        "e1",
    )
    assert check_append(base64.b64encode(b"\x01\x02\x03").decode(), "pcm16", None) == 3  # a split sample
    assert check_append(base64.b64encode(b"\x01\x02\x03").decode(), "pcmu", None) == 3
    floats = base64.b64encode(_float32(0.3 * np.sin(np.arange(960) / 5))).decode()
    with pytest.raises(InvalidEvent, match="32-bit float"):
        check_append(floats, "pcm16", None)


def _pieces(data: bytes, size: int) -> list[str]:
    return [base64.b64encode(data[i : i + size]).decode() for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [33, 1323, 4801])
def test_samples_split_across_appends_are_legal_and_counted(size: int) -> None:
    """The API's buffer is a byte stream: the Realtime cookbook's chunker sent 1,323-byte PCM16
    chunks, recorded sessions cut appends to 33-byte stubs. None of it may be refused."""
    check = InputAudioCheck("pcm16")
    splits: list[int] = []
    check.on_split_sample = lambda: splits.append(1)
    speech = speech_pcm16("Alignment is a property of the buffer, not of one append.")
    for piece in _pieces(speech, size):
        check.check(piece, None)
    assert len(splits) == sum(1 for i in range(0, len(speech), size) if len(speech[i : i + size]) % 2)


@pytest.mark.parametrize("size", [33, 1323, 4801])
def test_float32_is_caught_however_the_stream_is_cut(size: int) -> None:
    """The detector reads the stream across appends and, off the 4-byte grid, at every phase, so
    cutting float32 data at odd places (or into stubs too small to judge alone) cannot hide it;
    and real PCM16 cut the same way is never refused."""
    for name, signal in _signals().items():
        pcm = InputAudioCheck("pcm16")
        pcm.check(base64.b64encode(b"\x00\x01\x02").decode(), None)  # throw the grid off first
        for piece in _pieces(_pcm16(signal), size):
            pcm.check(piece, None)  # raises on a false positive
        if name in ("speech", "chord"):
            check = InputAudioCheck("pcm16")
            floats = _float32(signal[: RATE // 2])
            refused = 0
            for piece in _pieces(floats, size):
                try:
                    check.check(piece, None)
                except InvalidEvent as exc:
                    refused += exc.code == "invalid_audio_format"
            assert refused >= len(floats) // max(size, 256) // 2


def test_commit_accounting_matches_the_api_message() -> None:
    account = AudioAccount()
    account.appended(48 * 50)
    with pytest.raises(InvalidEvent) as caught:
        account.check_commit(turn_detection_on=False, client_event_id=None)
    assert caught.value.message.endswith("but buffer only has 50.00ms of audio.")
    account.appended(48 * 50)
    account.check_commit(turn_detection_on=False, client_event_id=None)
    account.set_encoding("pcmu")
    account.committed()
    account.appended(8 * 99)
    with pytest.raises(InvalidEvent, match=r"99\.00ms"):
        account.check_commit(turn_detection_on=False, client_event_id=None)
    account.appended(8)
    account.check_commit(turn_detection_on=False, client_event_id=None)
    # With server VAD on, only a buffer known to be empty is answered locally.
    account.committed()
    with pytest.raises(InvalidEvent):
        account.check_commit(turn_detection_on=True, client_event_id=None)
    account.appended(8)
    account.check_commit(turn_detection_on=True, client_event_id=None)


def test_encoding_of_sessions() -> None:
    assert encoding_of({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}) == "pcmu"
    assert encoding_of({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}) == "pcm16"
    assert encoding_of({"input_audio_format": "g711_alaw"}) == "pcma"


@pytest.mark.parametrize(
    "text",
    [
        "AAA",  # missing padding
        "A===",
        "AA=A",  # data after padding
        "AA==AA",
        "AAAA=",  # padding after a complete quantum (binascii's strict mode lets this one through)
        " AAAA",  # whitespace, which lenient decoders skip
        "AAAA\n",
        "AB-_",  # the URL-safe alphabet
        "AAAé",
    ],
)
def test_append_audio_must_be_canonical_base64(text: str) -> None:
    with pytest.raises(InvalidEvent, match="Expected base64-encoded audio"):
        check_append(text, "pcmu", None)


@given(st.binary(max_size=3000))
def test_every_canonical_encoding_is_accepted_as_its_bytes(pcm: bytes) -> None:
    assert check_append(base64.b64encode(pcm).decode(), "pcmu", None) == len(pcm)


# ---------------------------------------------------------------------------------- the fast path
@settings(max_examples=600, deadline=None)
@given(frame=append_like())
def test_the_plain_append_shortcut_only_takes_what_the_full_check_accepts_alike(frame: bytes) -> None:
    """Whatever the shortcut takes, the parse, the schema's shortcut and the strict decoder take
    too, with the same audio: it may only decline, never differ."""
    for shortcut in (decode_plain_append, py_decode_plain_append, py_decode_compact_append):
        audio = shortcut(frame)
        if audio is None:
            continue
        full = ClientEventChecker(_SETTINGS, Interface.GA)  # the whole check, schema included
        checked = [(forwarded, kind) for forwarded, kind, _ in full.check(frame)]
        assert checked == [(frame, "input_audio_buffer.append")]
        assert full.audio == audio


def test_the_plain_append_shortcut_takes_the_frames_apps_send() -> None:
    audio = base64.b64encode(_pcm16(_signals()["speech"])[:960]).decode()
    forms = [
        {"type": "input_audio_buffer.append", "audio": audio},
        {"type": "input_audio_buffer.append", "audio": audio, "event_id": "evt_1"},
        {"type": "input_audio_buffer.append", "event_id": "b0x12", "audio": audio},
    ]
    sent = [orjson.dumps(form) for form in forms]  # JSON.stringify and orjson: compact
    sent += [json.dumps(form).encode() for form in forms]  # the openai SDK: json.dumps' spaces
    sent.append(  # the Agents SDK: pydantic's field order, the audio first
        InputAudioBufferAppendEvent(type="input_audio_buffer.append", audio=audio)
        .model_dump_json(exclude_unset=True)
        .encode()
    )
    assert sent[-1].startswith(b'{"audio":')
    assert [py_decode_plain_append(frame) for frame in sent] == [base64.b64decode(audio)] * len(sent)
    # The build's: compiled, every form (as test_speedups holds it to the reference); pure
    # Python, the compact ones, the others left to the full check (cheaper there).
    taken = [decode_plain_append(frame) is not None for frame in sent]
    expected = [True] * len(sent) if speedups.build() == "compiled" else [True] * 3 + [False] * 4
    assert taken == expected
    declined = [
        b'{"type":"input_audio_buffer.append","audio":"' + audio.encode() + b'","event_id":null}',
        b'{"type":"input_audio_buffer.append","audio":"AAAA=="}',
        b'{"type":"input_audio_buffer.append","type":"input_audio_buffer.append","audio":"AAAA"}',
        b'{"type":"input_audio_buffer.append",\x0b"audio":"AAAA"}',  # not JSON's whitespace
        b'{"type":"input_audio_buffer.append","audio":"AAAA"} x',
        b'{"type":"input_audio_buffer.append","audio":"AAAA","x":1}',
    ]
    assert [py_decode_plain_append(frame) for frame in declined] == [None] * len(declined)
    assert [decode_plain_append(frame) for frame in declined] == [None] * len(declined)


def test_the_shortcut_takes_a_stream_off_its_grid_as_check_does_and_declines_a_refusal_unchanged() -> None:
    """Part samples, too little to judge alone, a carry: the shortcut takes them with check's
    effect on the stream (the same carry, the same split-sample notice); float32, which check
    refuses, it declines with nothing changed, so check can refuse it and say why."""
    speech = _pcm16(_signals()["speech"])
    pcm = speech[:960]
    floats = _float32(_signals()["chord"])[:960]
    taken, checked = InputAudioCheck(), InputAudioCheck()
    splits: list[str] = []
    taken.on_split_sample = lambda: splits.append("taken")
    checked.on_split_sample = lambda: splits.append("checked")

    def frame(audio: bytes) -> bytes:
        return orjson.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})

    for audio in (pcm, pcm[:102], pcm[:3], pcm, speech[:961]):
        assert checked.check(base64.b64encode(audio).decode(), None) == audio
        assert taken.take_plain(frame(audio)) == audio
        assert taken._carry == checked._carry
    assert taken._carry  # not a vacuous comparison: the stream is off its grid
    assert splits == ["checked", "taken"] * 2  # the 3-byte and the 961-byte appends
    carry = taken._carry
    assert taken.take_plain(frame(floats)) is None
    assert taken._carry == carry  # declined unchanged: check refuses it, carrying as it does
    with pytest.raises(InvalidEvent):
        checked.check(base64.b64encode(floats).decode(), None)
    assert InputAudioCheck().take_plain(frame(floats)) is None  # and on the common path
    g711 = InputAudioCheck("pcmu")
    assert g711.take_plain(frame(b"\x7f" * 3)) == b"\x7f" * 3  # a byte is a sample
