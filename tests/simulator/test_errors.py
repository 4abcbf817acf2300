"""The reference's error catalogue (§4) and the stateful errors, reproduced exactly.

Each case checks code, param, message and the echoed ``event_id``; every error is non-fatal
(the session answers the next request), as on the live API (§3.2 point 8).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest
import websockets

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.simulator.conftest import AUTH, SimClient, ws_url

GA_TYPES = (
    "'session.update', 'session.close', 'input_audio_buffer.append', "
    "'session.input_audio_buffer.append', 'input_audio_buffer.commit', 'input_audio_buffer.clear', "
    "'conversation.item.create', 'conversation.item.truncate', 'conversation.item.delete', "
    "'conversation.item.retrieve', 'response.create', and 'response.cancel'"
)


def _user_text(text: str, **extra: Any) -> dict[str, Any]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}], **extra}
    return {"type": "conversation.item.create", "item": item}


def _update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "realtime", **session}}


SCHEMA_CATALOGUE = [
    (
        _update(bogus_field=1),
        "unknown_parameter",
        "session.bogus_field",
        "Unknown parameter: 'session.bogus_field'.",
    ),
    (
        {"type": "nope"},
        "invalid_value",
        "type",
        f"Invalid value: 'nope'. Supported values are: {GA_TYPES}.",
    ),
    (
        {"type": "session.update", "session": {"instructions": "x"}},
        "missing_required_parameter",
        "session.type",
        "Missing required parameter: 'session.type'.",
    ),
    (
        _user_text("hi", id="x" * 39),
        "string_above_max_length",
        "item.id",
        "Invalid 'item.id': string too long. Expected a string with maximum length 32, but got a string "
        "with length 39 instead.",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "c" * 438, "output": "{}"},
        },
        "string_above_max_length",
        "item.call_id",
        "Invalid 'item.call_id': string too long. Expected a string with maximum length 32, but got a "
        "string with length 438 instead.",
    ),
    (
        _update(audio={"input": {"format": "pcm16"}}),
        "invalid_type",
        "session.audio.input.format",
        "Invalid type for 'session.audio.input.format': expected an object, but got a string instead.",
    ),
    (
        _update(audio={"input": {"format": {"type": "audio/pcm", "rate": 16000}}}),
        "integer_below_min_value",
        "session.audio.input.format.rate",
        "Invalid 'session.audio.input.format.rate': integer below minimum value. Expected a value >= "
        "24000, but got 16000 instead.",
    ),
    (  # reference §2.1: both together is not allowed (wording as the beta API's live message)
        _update(output_modalities=["audio", "text"]),
        "invalid_value",
        "session.output_modalities",
        "Invalid modalities: ['audio', 'text']. Supported combinations are: ['text'] and ['audio'].",
    ),
]


@pytest.mark.parametrize(("event", "code", "param", "message"), SCHEMA_CATALOGUE, ids=lambda x: str(x)[:40])
async def test_schema_errors(
    sim: SimClient, event: dict[str, Any], code: str, param: str, message: str
) -> None:
    await _expect_error(sim, event, code, param, message)


async def _expect_error(
    sim: SimClient, event: dict[str, Any], code: str | None, param: str | None, message: str
) -> None:
    await sim.send({**event, "event_id": "evt_cat"})
    error = (await sim.until("error"))[-1]["error"]
    got = (error["type"], error["code"], error["param"], error["event_id"])
    assert got == ("invalid_request_error", code, param, "evt_cat")
    assert error["message"].split(" Hint:")[0] == message  # the validator may add a hint
    await sim.send({"type": "input_audio_buffer.clear"})  # still alive
    assert (await sim.until("input_audio_buffer.cleared"))[-1]["type"] == "input_audio_buffer.cleared"


async def test_transport_level_errors(sim: SimClient) -> None:
    await sim.ws.send("{not json")
    error = (await sim.until("error"))[-1]["error"]
    assert (error["code"], error["param"]) == ("invalid_json", None)
    assert error["message"].startswith("Invalid event: failed to parse JSON value.")  # + parser detail
    await sim.ws.send(b"\x00binary")
    error = (await sim.until("error"))[-1]["error"]
    assert (error["code"], error["message"]) == (
        "invalid_event",
        "Expected a text WebSocket message; binary frames are not supported.",
    )
    await sim.ws.send('{"event_id": "e9"}')
    error = (await sim.until("error"))[-1]["error"]
    assert (error["code"], error["message"], error["event_id"]) == (
        "invalid_event",
        "The 'type' field is missing.",
        "e9",
    )


async def test_commit_too_small_reports_the_buffered_ms(sim: SimClient) -> None:
    await sim.send(_update(audio={"input": {"turn_detection": None}}))
    await sim.until("session.updated")
    message = (
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
        "but buffer only has {}ms of audio."
    )
    await _expect_error(
        sim,
        {"type": "input_audio_buffer.commit"},
        "input_audio_buffer_commit_empty",
        None,
        message.format("0.00"),
    )
    await sim.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * 2424).decode()})
    await _expect_error(
        sim,
        {"type": "input_audio_buffer.commit"},
        "input_audio_buffer_commit_empty",
        None,
        message.format("50.50"),
    )


async def test_commit_empty_counts_g711_at_8_bytes_per_ms(sim: SimClient) -> None:
    await sim.send(_update(audio={"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}}))
    await sim.until("session.updated")
    await sim.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\xff" * 792).decode()})
    await sim.send({"type": "input_audio_buffer.commit", "event_id": "e1"})
    assert (await sim.until("error"))[-1]["error"]["message"].endswith("only has 99.00ms of audio.")
    await sim.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\xff" * 8).decode()})
    await sim.send({"type": "input_audio_buffer.commit"})
    assert (await sim.until("input_audio_buffer.committed"))[-1]["type"] == "input_audio_buffer.committed"


async def test_invalid_base64_audio(sim: SimClient) -> None:
    message = (
        "Invalid 'audio'. Expected base64-encoded audio bytes (mono PCM16 at 24kHz) but got an invalid value."
    )
    append = {"type": "input_audio_buffer.append", "audio": "not base64!"}
    await _expect_error(sim, append, "invalid_value", "audio", message)


async def test_response_conflicts_and_cancellation(sim: SimClient) -> None:
    await sim.send(_user_text("a long question"))
    await sim.send({"type": "response.create"})
    created = (await sim.until("response.created"))[-1]["response"]
    active = (
        f"Conversation already has an active response in progress: {created['id']}. Wait until the "
        "response is finished before creating a new one."
    )
    await _expect_error(
        sim, {"type": "response.create"}, "conversation_already_has_active_response", None, active
    )
    await sim.send({"type": "response.cancel"})
    done = (await sim.until("response.done"))[-1]["response"]
    assert (done["status"], done["status_details"]) == (
        "cancelled",
        {"type": "cancelled", "reason": "client_cancelled"},
    )
    not_active = "Cancellation failed: no active response found"
    await _expect_error(sim, {"type": "response.cancel"}, "response_cancel_not_active", None, not_active)


async def test_out_of_band_responses_do_not_conflict(sim: SimClient) -> None:
    await sim.send(_user_text("question"))
    await sim.send({"type": "response.create"})
    await sim.send({"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "v"}}})
    await sim.until_count("response.done", 2)
    done = [e["response"] for e in sim.events if e["type"] == "response.done"]
    out_of_band = [(r["conversation_id"] is None, r["metadata"]) for r in done]
    assert sorted(out_of_band, key=str) == [(False, None), (True, {"k": "v"})]
    assert not [e for e in sim.events if e["type"] == "error"]


async def test_voice_is_locked_once_assistant_audio_exists(sim: SimClient) -> None:
    await sim.send(_user_text("hi"))
    await sim.send({"type": "response.create"})
    await sim.until("response.done")
    message = "Cannot update a conversation's voice if assistant audio is present."
    change = _update(instructions="new", audio={"output": {"voice": "ash"}})
    await _expect_error(sim, change, "cannot_update_voice", None, message)
    await sim.send(_update(audio={"output": {"voice": "alloy"}}))  # the same voice is fine
    session = (await sim.until("session.updated"))[-1]["session"]
    assert session["instructions"] != "new"  # the rejected update changed nothing


async def test_immutable_session_fields(sim: SimClient) -> None:
    await _expect_error(
        sim,
        _update(model="gpt-realtime-mini"),
        "invalid_value",
        "session.model",
        "Cannot update a session's model.",
    )
    transcription = {"type": "session.update", "session": {"type": "transcription"}}
    message = "Passing a transcription session update event to a realtime session is not allowed."
    await _expect_error(sim, transcription, "invalid_parameter", "session.type", message)
    await sim.send(_update(tracing="auto"))
    await sim.until("session.updated")
    tracing = _update(tracing={"workflow_name": "w"})
    await _expect_error(
        sim, tracing, "invalid_value", "session.tracing", "Tracing cannot be modified once enabled."
    )


async def test_conversation_item_errors(sim: SimClient) -> None:
    await sim.send(_user_text("hi", id="item_a"))
    await sim.until("conversation.item.done")
    unknown_previous = "Invalid 'previous_item_id': no item with id 'item_x' exists in the conversation."
    await _expect_error(
        sim,
        {**_user_text("b"), "previous_item_id": "item_x"},
        "invalid_value",
        "previous_item_id",
        unknown_previous,
    )
    exists = "Item with id 'item_a' already exists."
    await _expect_error(sim, _user_text("again", id="item_a"), "invalid_value", "item.id", exists)
    for kind in ("retrieve", "delete"):
        event = {"type": f"conversation.item.{kind}", "item_id": "item_x"}
        await _expect_error(sim, event, "item_not_found", "item_id", "Item with id 'item_x' not found.")
    truncate = {
        "type": "conversation.item.truncate",
        "item_id": "item_a",
        "content_index": 0,
        "audio_end_ms": 0,
    }
    only = "Only assistant messages with audio can be truncated."
    await _expect_error(sim, truncate, "invalid_value", "item_id", only)


async def test_truncate_beyond_the_audio_length(sim: SimClient) -> None:
    await sim.send(_user_text("hi"))
    await sim.send({"type": "response.create"})
    done = (await sim.until("response.done"))[-1]["response"]
    item_id = done["output"][0]["id"]
    length = (
        len(
            base64.b64decode(
                "".join(e["delta"] for e in sim.events if e["type"] == "response.output_audio.delta")
            )
        )
        // 48
    )
    too_far = {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": length + 1,
    }
    message = f"Audio content of {length}ms is already shorter than {length + 1}ms"
    await _expect_error(sim, too_far, "invalid_value", "audio_end_ms", message)
    await sim.send({**too_far, "audio_end_ms": 100})
    truncated = (await sim.until("conversation.item.truncated"))[-1]
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 100)
    await sim.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await sim.until("conversation.item.retrieved"))[-1]["item"]
    assert item["content"][0]["transcript"] == ""  # the API deletes the transcript (§2.5)


async def test_auth_and_model_failures_close_like_the_api() -> None:
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), api_keys=("sk-good-key",)))
    base = ws_url(port, "/v1/realtime")
    bearer = {"Authorization": "Bearer sk-good-key"}
    cases = [
        (base + "?model=gpt-realtime", {}, 3000, None, "Missing bearer or basic authentication in header"),
        (
            base + "?model=gpt-realtime",
            {"Authorization": "Bearer sk-bad-key42"},
            3000,
            "invalid_api_key",
            "Incorrect API key provided: sk-***42.",
        ),
        (
            base,
            bearer,
            4000,
            "missing_model",
            "You must provide a model parameter, for example wss://api.openai.com/v1/realtime?model=gpt-realtime-1.5",
        ),
        (
            base + "?model=gpt-nope",
            bearer,
            4000,
            "invalid_model",
            'Model "gpt-nope" is not supported in realtime mode.',
        ),
        (
            base + "?model=gpt-realtime",
            {**bearer, "OpenAI-Beta": "realtime=v1"},
            4000,
            "beta_api_shape_disabled",
            "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
        ),
    ]
    try:
        for url, headers, close, code, message in cases:
            async with websockets.connect(url, additional_headers=headers) as ws:
                event = orjson.loads(await ws.recv())
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
            assert (event["error"]["code"], event["error"]["message"]) == (code, message)
            assert (ws.close_code, ws.close_reason) == (close, f"invalid_request_error.{code}")
    finally:
        await runner.cleanup()


async def test_session_expiry_like_the_api() -> None:
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), session_max_s=0.5))
    try:
        async with websockets.connect(ws_url(port), additional_headers=AUTH) as ws:
            await ws.recv()
            error = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
    finally:
        await runner.cleanup()
    message = "Your session hit the maximum duration of 0 minutes."
    assert (error["error"]["code"], error["error"]["message"]) == ("session_expired", message)
    assert (ws.close_code, ws.close_reason) == (1001, message)


async def test_beta_enum_error_on_the_beta_interface() -> None:
    runner, port = await start_simulator(SimulatorConfig(timing=Timing.fast(), interface="beta"))
    headers = {**AUTH, "OpenAI-Beta": "realtime=v1"}
    try:
        async with websockets.connect(
            ws_url(port, "/v1/realtime?model=gpt-4o-realtime-preview"), additional_headers=headers
        ) as ws:
            client = SimClient(ws, beta=True)
            await client.until("session.created")
            update = {"type": "session.update", "session": {"input_audio_format": "g711-ulaw"}}
            await _expect_error(
                client,
                update,
                "invalid_value",
                "session.input_audio_format",
                "Invalid value: 'g711-ulaw'. Supported values are: 'pcm16', 'g711_ulaw', and 'g711_alaw'.",
            )
    finally:
        await runner.cleanup()
