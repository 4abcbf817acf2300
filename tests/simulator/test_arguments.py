"""A simulated function call's arguments fit the tool's parameters, as a model's would."""

from __future__ import annotations

import orjson

from relay.simulator.arguments import arguments_for
from tests.simulator.conftest import SimClient
from tests.simulator.test_responses import _update, _user_text

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def test_required_properties_get_values_of_their_type() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 3},
            "limit": {"anyOf": [{"type": "null"}, {"type": "number"}]},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
            "note": {"type": "string"},
        },
        "required": ["city", "unit", "days", "limit", "tags"],
        "$defs": {"Tag": {"type": "object", "properties": {"on": {"type": "boolean"}}}},
    }
    said = "Book a table in New York for three days."
    assert orjson.loads(arguments_for(schema, said)) == {
        "city": "New York",  # a proper name the user said; "Book" opens the sentence
        "unit": "celsius",
        "days": 3,
        "limit": 1,
        "tags": [{"on": True}],
    }  # "note" is optional: left out


def test_without_a_proper_name_or_properties() -> None:
    assert orjson.loads(arguments_for(WEATHER, "what is the weather? Tell me.")) == {"city": "example"}
    assert arguments_for({"type": "object"}, "anything") == "{}"
    assert arguments_for(None) == "{}"
    # no "required": every property, as strict tool schemas list them all anyway
    assert orjson.loads(arguments_for({"properties": {"q": {"type": "string"}}})) == {"q": "example"}


async def test_a_tool_call_through_the_simulator_fits_the_schema(sim: SimClient) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER}
    await sim.send(_update(tools=[tool], output_modalities=["text"]))
    await sim.until("session.updated")
    await sim.send(_user_text("What's the weather in Paris? Use get_weather."))
    await sim.send({"type": "response.create"})
    done = (await sim.until("response.done"))[-1]
    call = done["response"]["output"][0]
    assert (call["name"], orjson.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
