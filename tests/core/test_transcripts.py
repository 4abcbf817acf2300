"""Transcription sessions in the core: committed utterances kept until transcribed, re-sent in
order to a replacement upstream, and transcripts shown in commit order."""

from __future__ import annotations

import base64
from typing import Any

from relay.core.protocol import Interface
from relay.core.replay import EchoFilter, plan_replay, plan_transcriptions
from relay.core.session import SessionState
from relay.core.transcripts import TranscriptOrder
from relay.core.validation import Validator

COMPLETED = "conversation.item.input_audio_transcription.completed"
GA = Validator(Interface.GA)


def _transcription_session(turn_detection: Any = None) -> SessionState:
    state = SessionState()
    session = {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": "sess_1",
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": turn_detection}
        },
    }
    state.on_server_event({"type": "session.created", "session": session})
    return state


def _utterance(state: SessionState, audio: bytes, item_id: str) -> None:
    state.append_audio(audio, now=0.0)
    state.on_client_event({"type": "input_audio_buffer.commit"})
    state.on_server_event({"type": "input_audio_buffer.committed", "item_id": item_id})


def test_committed_audio_is_kept_until_its_transcript_is_out() -> None:
    state = _transcription_session()
    _utterance(state, b"\x01\x00" * 2400, "item_a")
    _utterance(state, b"\x02\x00" * 4800, "item_b")
    assert list(state.transcribing) == ["item_a", "item_b"]
    assert not state.is_quiet()  # a rotation waits: the old upstream is transcribing them
    state.on_server_event({"type": COMPLETED, "item_id": "item_a", "transcript": "a"})
    state.on_server_event(
        {"type": "conversation.item.input_audio_transcription.failed", "item_id": "item_b", "error": {}}
    )
    assert state.transcribing == {}
    assert state.is_quiet()


def test_a_replacement_upstream_re_transcribes_in_order_with_vad_off_meanwhile() -> None:
    detection = {"type": "server_vad", "prefix_padding_ms": 300}
    state = _transcription_session(turn_detection=detection)
    state.on_server_event(
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_a"}
    )
    state.append_audio(b"\x01\x00" * 4800, now=0.0)
    state.on_server_event(
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 100, "item_id": "item_a"}
    )
    state.on_server_event({"type": "input_audio_buffer.committed", "item_id": "item_a"})
    assert len(state.transcribing["item_a"]) == 4800  # the utterance, to where the speech ended
    plan = plan_replay(state)
    assert plan.update["session"]["type"] == "transcription"
    assert plan.creates == {}  # a transcription session keeps no conversation
    events, ids = plan_transcriptions(state)
    assert ids == ["item_a"]
    assert [e["type"] for e in events] == [
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "session.update",
    ]
    assert events[0]["session"]["audio"]["input"]["turn_detection"] is None
    assert events[-1]["session"]["audio"]["input"]["turn_detection"] == detection
    assert base64.b64decode(events[1]["audio"]) == b"\x01\x00" * 2400
    for event in events:
        GA.check(event)
    owned = [{**e, "event_id": f"relay_t_{n}"} for n, e in enumerate(events)]
    echo = EchoFilter(owned, relay_ids="relay_t_")
    for answer in (
        {"type": "session.updated", "session": {}},
        {"type": "input_audio_buffer.committed", "item_id": "item_new"},
        {"type": "session.updated", "session": {}},
    ):
        assert echo.suppress(answer)
    assert echo.done
    assert echo.committed == ["item_new"]  # stands for item_a


def test_transcripts_are_shown_in_commit_order() -> None:
    order = TranscriptOrder()
    for item_id in ("a", "b", "c"):
        order.committed(item_id)
    assert order.finished("b", b"B") == []  # held: "a" was committed first
    assert order.finished("x", b"X") == [b"X"]  # not one the app committed through us
    assert order.finished("a", b"A") == [b"A", b"B"]
    assert order.finished("c", b"C") == [b"C"]
    assert order.waiting == 0
