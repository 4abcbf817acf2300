"""Phone calls: the accept body's validation (session.update's schema, hints and policy, rebased
onto the body) and the pinning of a call's G.711 formats (field failure F4)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from relay.core.calls import (
    CallFormats,
    accept_error,
    check_response_format,
    is_call_id,
    pin_call_formats,
    police_accept,
    rest_error,
    validate_accept,
)
from relay.core.errors import InvalidEvent
from relay.core.policy import Policy
from relay.core.validation import Validator

PCM = {"type": "audio/pcm", "rate": 24000}
PCMU = {"type": "audio/pcmu"}
PCMA = {"type": "audio/pcma"}
END_CALL = {
    "type": "function",
    "name": "end_call",
    "description": "Ends the call.",
    "parameters": {"type": "object", "properties": {}, "required": []},
}
# The body from the forum report that turned calls into static (F4).
FORUM_ACCEPT = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You're a friendly bot talking to someone on a phone call.",
    "tools": [END_CALL],
}


def _refused(body: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        validate_accept(body, Validator())
    return caught.value


# ---------------------------------------------------------------------- accept validation
def test_the_forum_accept_is_valid() -> None:
    validate_accept(copy.deepcopy(FORUM_ACCEPT), Validator())


def test_web_search_tool_gets_the_api_message_and_the_hint() -> None:
    error = _refused({"type": "realtime", "tools": [{"type": "web_search"}]})
    assert (error.code, error.param) == ("invalid_value", "tools[0].type")
    assert error.message.startswith(
        "Invalid value: 'web_search'. Supported values are: 'function' and 'mcp'."
    )
    assert "Responses API, not in Realtime" in error.message


def test_missing_type_names_the_body_root_and_says_where_it_goes() -> None:
    error = _refused({"instructions": "Hi"})
    assert (error.code, error.param) == ("missing_required_parameter", "type")
    assert error.message.startswith("Missing required parameter: 'type'. Hint: an accept body is")
    assert "session.update" not in error.message


def test_transcription_type_is_refused_for_a_call() -> None:
    error = _refused({"type": "transcription"})
    assert (error.code, error.param) == ("invalid_value", "type")


def test_unknown_key_and_beta_field() -> None:
    unknown = _refused({"type": "realtime", "bogus": 1})
    assert (unknown.code, unknown.param, unknown.message) == (
        "unknown_parameter",
        "bogus",
        "Unknown parameter: 'bogus'.",
    )
    beta = _refused({"type": "realtime", "input_audio_format": "g711_ulaw"})
    assert beta.param == "input_audio_format"
    assert "'audio.input.format'" in beta.message
    assert "'session." not in beta.message


def test_nested_errors_keep_their_path_below_the_root() -> None:
    error = _refused({"type": "realtime", "audio": {"output": {"speed": 3}}})
    assert (error.code, error.param) == ("decimal_above_max_value", "audio.output.speed")


def test_a_body_that_is_not_an_object() -> None:
    error = _refused(["type", "realtime"])
    assert (error.code, error.param) == ("invalid_type", None)
    assert "got an array" in error.message


def test_rest_error_is_the_api_error_response_shape() -> None:
    body = rest_error(_refused({"type": "realtime", "bogus": 1}))
    assert body == {
        "error": {
            "message": "Unknown parameter: 'bogus'.",
            "type": "invalid_request_error",
            "param": "bogus",
            "code": "unknown_parameter",
        }
    }


def test_accept_error_drops_event_ids_and_rebases_a_bare_session_param() -> None:
    rebased = accept_error(InvalidEvent("x", "Invalid 'session'.", "session", "evt_1"))
    assert (rebased.param, rebased.client_event_id, rebased.message) == (None, None, "Invalid 'session'.")


def test_policy_applies_to_the_accept_as_to_a_session_update() -> None:
    policy = Policy(force_session={"instructions": "Be brief."}, max_output_tokens=300)
    body: dict[str, Any] = {"type": "realtime", "instructions": "Ramble."}
    assert police_accept(body, policy) is True
    assert (body["instructions"], body["max_output_tokens"]) == ("Be brief.", 300)
    strict = Policy(allowed_tool_types=["function"], forbidden_session_fields=["prompt"])
    with pytest.raises(InvalidEvent) as caught:
        police_accept({"type": "realtime", "prompt": {"id": "pmpt_1"}}, strict)
    assert (caught.value.code, caught.value.param) == ("forbidden_parameter", "prompt")
    assert "'prompt'" in caught.value.message
    assert "session." not in caught.value.message


# ---------------------------------------------------------------------- format pinning
def test_an_accept_without_formats_gets_the_calls() -> None:
    body = copy.deepcopy(FORUM_ACCEPT)
    assert pin_call_formats(body, CallFormats(), param_prefix="") is True
    assert body["audio"] == {"input": {"format": PCMU}, "output": {"format": PCMU}}
    assert body["tools"] == [END_CALL]  # nothing else touched


def test_only_the_missing_direction_is_filled_and_other_audio_settings_stay() -> None:
    body = {"type": "realtime", "audio": {"input": {"format": PCMA, "turn_detection": None}}}
    formats = CallFormats.of(body, "audio/pcmu")
    assert formats == CallFormats("audio/pcma", "audio/pcma")  # one leg, one codec
    assert pin_call_formats(body, formats) is True
    assert body["audio"] == {"input": {"format": PCMA, "turn_detection": None}, "output": {"format": PCMA}}


def test_null_audio_and_null_format_count_as_absent() -> None:
    body: dict[str, Any] = {"type": "realtime", "audio": None}
    assert pin_call_formats(body, CallFormats()) is True
    assert body["audio"]["output"]["format"] == PCMU
    body = {"type": "realtime", "audio": {"input": {"format": None}, "output": None}}
    assert pin_call_formats(body, CallFormats()) is True
    assert body["audio"] == {"input": {"format": PCMU}, "output": {"format": PCMU}}


def test_a_body_naming_g711_is_left_as_it_is() -> None:
    body = {"type": "realtime", "audio": {"input": {"format": PCMU}, "output": {"format": PCMA}}}
    before = copy.deepcopy(body)
    assert pin_call_formats(body, CallFormats()) is False
    assert body == before


def test_pcm_on_a_call_is_refused_with_the_param_and_a_hint() -> None:
    update = {"type": "realtime", "audio": {"output": {"format": PCM}}}
    with pytest.raises(InvalidEvent) as caught:
        pin_call_formats(update, CallFormats(), event_id="evt_7")
    error = caught.value
    assert (error.code, error.param, error.client_event_id) == (
        "invalid_value",
        "session.audio.output.format.type",
        "evt_7",
    )
    assert "Invalid value: 'audio/pcm'" in error.message
    assert "static" in error.message
    assert '{"type": "audio/pcmu"}' in error.message
    accept = {"type": "realtime", "audio": {"input": {"format": PCM}}}
    with pytest.raises(InvalidEvent) as caught:
        pin_call_formats(accept, CallFormats(), param_prefix="")
    assert caught.value.param == "audio.input.format.type"


def test_pcm_is_refused_even_when_filling_is_off_and_nothing_is_written() -> None:
    body: dict[str, Any] = {"type": "realtime", "tools": []}
    assert pin_call_formats(body, CallFormats(), fill=False) is False
    assert "audio" not in body
    with pytest.raises(InvalidEvent):
        pin_call_formats({"audio": {"input": {"format": PCM}}}, CallFormats(), fill=False)


def test_shapes_the_schema_refuses_are_left_for_its_error() -> None:
    body: dict[str, Any] = {"audio": "pcm16"}
    assert pin_call_formats(body, CallFormats()) is False
    assert body == {"audio": "pcm16"}
    body = {"audio": {"input": "x", "output": {"format": "pcm16"}}}
    assert pin_call_formats(body, CallFormats()) is False
    assert body == {"audio": {"input": "x", "output": {"format": "pcm16"}}}


def test_a_session_update_is_patched_only_where_it_is_silent() -> None:
    """The API's session.update is a patch: the relay fills the formats, the rest stays a patch."""
    update = {"type": "realtime", "tools": [END_CALL]}
    assert pin_call_formats(update, CallFormats("audio/pcma", "audio/pcma")) is True
    assert update == {
        "type": "realtime",
        "tools": [END_CALL],
        "audio": {"input": {"format": PCMA}, "output": {"format": PCMA}},
    }


def test_a_response_may_not_choose_pcm_on_a_call() -> None:
    check_response_format({"audio": {"output": {"format": PCMU}}}, CallFormats())
    check_response_format(None, CallFormats())
    check_response_format({"instructions": "hi"}, CallFormats())
    with pytest.raises(InvalidEvent) as caught:
        check_response_format({"audio": {"output": {"format": PCM}}}, CallFormats(), event_id="e")
    assert caught.value.param == "response.audio.output.format.type"


def test_call_formats_default_and_ids() -> None:
    assert CallFormats.of({"type": "realtime"}, "audio/pcma") == CallFormats("audio/pcma", "audio/pcma")
    assert CallFormats.of({"audio": {"input": {"format": PCM}}}, "audio/pcmu") == CallFormats()
    assert is_call_id("rtc_479a275623b54bdb9b6fbae2f7cbd408")
    assert is_call_id("some_unique_id")
    for bad in ("", "../accept", "a/b", "rtc_1?x=1", "rtc 1", "x" * 129, "rtc_é"):
        assert not is_call_id(bad), bad
