"""The beta <-> GA table: complete against the beta schema, and an identity round trip."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.beta import DROPPED_SESSION_FIELDS, FORMATS, SERVER_RENAMES, SESSION_FIELDS, fields_to_beta
from relay.core.beta_translator import BetaTranslator
from relay.core.errors import InvalidEvent
from relay.core.protocol import BETA_CLIENT_EVENT_TYPES, Interface
from relay.core.validation import Validator
from tests.support.recordings import DATA, load, recording_files

BETA_SCHEMA = DATA / "reference" / "openapi-realtime-beta.yaml"


def _beta_schema() -> dict[str, Any]:
    return dict(yaml.safe_load(BETA_SCHEMA.read_text())["components"]["schemas"])


def test_every_beta_session_field_has_a_row() -> None:
    fields = set(_beta_schema()["RealtimeSessionCreateRequest"]["properties"])
    known = set(SESSION_FIELDS) | DROPPED_SESSION_FIELDS
    assert fields - known == set(), f"beta session fields with no row: {sorted(fields - known)}"


def test_every_beta_client_event_is_mapped_or_refused() -> None:
    schemas = _beta_schema()
    events = {
        s["properties"]["type"]["enum"][0]
        for n, s in schemas.items()
        if n.startswith("RealtimeClientEvent") and n != "RealtimeClientEvent"
    }
    assert events == set(BETA_CLIENT_EVENT_TYPES)
    translator = BetaTranslator()
    samples: dict[str, dict[str, Any]] = {
        "session.update": {"session": {"modalities": ["text"]}},
        "transcription_session.update": {"session": {"input_audio_format": "pcm16"}},
        "input_audio_buffer.append": {"audio": "AAAA"},
        "conversation.item.create": {
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
        },
        "conversation.item.truncate": {"item_id": "i", "content_index": 0, "audio_end_ms": 1},
        "conversation.item.delete": {"item_id": "i"},
        "conversation.item.retrieve": {"item_id": "i"},
        "response.create": {"response": {"modalities": ["text"]}},
    }
    for kind in sorted(events - {"output_audio_buffer.clear"}):
        for ga in translator.client_to_ga({"type": kind, **samples.get(kind, {})}):
            Validator(Interface.GA).check(ga)
    with pytest.raises(InvalidEvent, match="WebRTC"):
        translator.client_to_ga({"type": "output_audio_buffer.clear"})


_values = {
    "modalities": st.sampled_from([["text"], ["audio", "text"]]),
    "instructions": st.text(max_size=20),
    "voice": st.sampled_from(["alloy", "ash", "marin"]),
    "input_audio_format": st.sampled_from(list(FORMATS)),
    "output_audio_format": st.sampled_from(list(FORMATS)),
    "input_audio_transcription": st.just({"model": "whisper-1"}),
    "input_audio_noise_reduction": st.just({"type": "near_field"}),
    "turn_detection": st.one_of(st.none(), st.just({"type": "server_vad", "threshold": 0.5})),
    "max_response_output_tokens": st.one_of(st.integers(1, 4096), st.just("inf")),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
}


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional=_values))
def test_beta_to_ga_to_beta_is_the_identity(session: dict[str, Any]) -> None:
    translator = BetaTranslator()
    event = {"type": "session.update", "session": session}
    Validator(Interface.BETA).check(event)
    (ga,) = translator.client_to_ga(event)
    Validator(Interface.GA).check(ga)
    assert fields_to_beta(ga["session"], SESSION_FIELDS) == session


@pytest.mark.parametrize("path", recording_files("openai-"), ids=lambda p: p.stem)
def test_recorded_ga_server_events_become_sdk_beta_events(path: Any) -> None:
    from openai.types.beta.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
    translator = BetaTranslator()
    for frame in load(path):
        if frame["direction"] != "received":
            continue
        beta = translator.server_to_beta(frame["data"])
        if beta is None:
            assert frame["data"]["type"] == "conversation.item.done"
            continue
        assert beta["type"] not in SERVER_RENAMES or SERVER_RENAMES[beta["type"]] == beta["type"]
        adapter.validate_python(beta)


def test_fast_path_matches_full_translation() -> None:
    translator = BetaTranslator()
    for ga_type in (
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_text.delta",
    ):
        event = {
            "type": ga_type,
            "event_id": "event_1",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": "Zm9v",
        }
        raw = orjson.dumps(event)
        fast = translator.server_frame_to_beta(raw)
        assert fast == orjson.dumps(translator.server_to_beta(event))
    assert translator.server_frame_to_beta(b'{"event_id":"e","type":"response.output_text.delta"}') is None
    slow = translator.server_bytes_to_beta(b'{"event_id":"e","type":"response.output_text.delta"}', None)
    assert slow is not None
    assert orjson.loads(slow)["type"] == "response.text.delta"


def test_error_params_come_back_in_beta_spelling() -> None:
    error = {
        "type": "error",
        "event_id": "e",
        "error": {
            "type": "invalid_request_error",
            "code": "invalid_value",
            "param": "session.audio.input.format.type",
            "message": "Invalid value: 'x' for 'session.audio.input.format.type'.",
            "event_id": None,
        },
    }
    beta = BetaTranslator().server_to_beta(error)
    assert beta is not None
    assert beta["error"]["param"] == "session.input_audio_format.type"
    assert "'session.input_audio_format.type'" in beta["error"]["message"]
