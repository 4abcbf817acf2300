"""Validation of client events, answered with the API's own error codes, params and messages.

pydantic does the schema work (strict models in ``relay.core.schema``); this module turns its
first error into the API's wording (reference §4) and appends a hint for the mistakes people
actually make (``relay.core.hints``). The 20 ms audio append, which is most of the traffic,
takes a fast path that checks its three possible keys directly.

pydantic reports every error it finds, one per bad element of a list: 100,000 bad elements took
~1 s and ~300 MB to collect and rank. Only one is ever reported, so the models run with every
list and dict stopping at its first bad element (:func:`_fail_fast`).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, SchemaValidator

from relay.core.errors import InvalidEvent
from relay.core.hints import hint_for
from relay.core.protocol import (
    BETA_CLIENT_EVENT_TYPES,
    GA_CLIENT_EVENT_TYPES,
    MAX_EVENT_ID_LENGTH,
    Interface,
)
from relay.core.schema import beta, ga
from relay.core.schema.common import TAG_MARK

_APPEND_TYPES = frozenset({"input_audio_buffer.append", "session.input_audio_buffer.append"})
_APPEND_KEYS = frozenset({"type", "event_id", "audio"})
_MODALITY_HOLDERS = {"session.update": "session", "response.create": "response"}  # where modalities are
# Allowed modality lists, sorted (reference §2.1; beta: BerriAI/litellm#14887's live message).
_GA_MODALITIES = (["text"], ["audio"])
_BETA_MODALITIES = (["text"], ["audio", "text"])
# Locations pydantic adds for union members that are not part of the API's param path.
_UNION_MEMBER_PREFIXES = ("literal[", "function-", "nullable", "constrained-")
_UNION_MEMBERS = frozenset({"int", "str", "float", "bool", "list", "dict", "none"})


def parse_client_frame(raw: str | bytes) -> dict[str, Any]:
    """Parse one text frame into an event object, or raise the API's parse errors."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", f"Invalid event: failed to parse JSON value. {exc.msg}.") from None
    if not isinstance(event, dict):
        raise InvalidEvent("invalid_event", "Invalid event: expected a JSON object.")
    if "type" not in event:
        raise InvalidEvent("invalid_event", "The 'type' field is missing.", None, _event_id(event))
    return event


def _event_id(event: dict[str, Any]) -> str | None:
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def quote_list(values: tuple[str, ...] | list[str]) -> str:
    """``'a', 'b', and 'c'`` — the API's way of listing supported values."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


class Validator:
    """Checks client events for one interface; raises :class:`InvalidEvent`."""

    def __init__(self, interface: Interface = Interface.GA) -> None:
        self.interface = interface
        ga_like = interface is Interface.GA
        self.types = GA_CLIENT_EVENT_TYPES if ga_like else BETA_CLIENT_EVENT_TYPES
        self.adapters = _fail_fast_validators(interface)

    def check(self, event: dict[str, Any]) -> None:
        event_type = event.get("type")
        if not isinstance(event_type, str):
            raise self._unknown_type(event, event_type)
        if event_type in _APPEND_TYPES and self.is_plain_append(event):
            return
        adapter = self.adapters.get(event_type) if isinstance(event_type, str) else None
        if adapter is None:
            raise self._unknown_type(event, event_type)
        try:
            adapter.validate_python(event)
        except ValidationError as exc:
            raise self._to_api_error(event, exc) from None
        self._check_modalities(event, event_type)

    def _check_modalities(self, event: dict[str, Any], event_type: str) -> None:
        """Each element may be 'audio' or 'text' (the schema), but only some lists are allowed:
        GA answers with ['audio'] (audio and its transcript) or ['text'], beta with ['text'] or
        ['audio', 'text']. Apps moving between the two send the other's spelling."""
        key = _MODALITY_HOLDERS.get(event_type)
        holder = event.get(key) if key else None
        field = "output_modalities" if self.interface is Interface.GA else "modalities"
        value = holder.get(field) if isinstance(holder, dict) else None
        allowed = _GA_MODALITIES if self.interface is Interface.GA else _BETA_MODALITIES
        if value is None or sorted(value) in allowed:
            return
        shown = " and ".join(str(sorted(a)) for a in allowed)
        message = f"Invalid modalities: {value}. Supported combinations are: {shown}."
        raise _with_hint(event, InvalidEvent("invalid_value", message, f"{key}.{field}", _event_id(event)))

    @staticmethod
    def is_plain_append(event: dict[str, Any]) -> bool:
        """An append with only its own keys, each well typed: exactly what the schema accepts."""
        event_id = event.get("event_id")
        return (
            event.keys() <= _APPEND_KEYS
            and type(event.get("audio")) is str
            and (event_id is None or (type(event_id) is str and len(event_id) <= MAX_EVENT_ID_LENGTH))
        )

    def _unknown_type(self, event: dict[str, Any], event_type: Any) -> InvalidEvent:
        if not isinstance(event_type, str):
            return api_error(event, "invalid_type", "type", "a string", event_type)
        message = f"Invalid value: '{event_type}'. Supported values are: {quote_list(self.types)}."
        return _with_hint(event, InvalidEvent("invalid_value", message, "type", _event_id(event)))

    def _to_api_error(self, event: dict[str, Any], exc: ValidationError) -> InvalidEvent:
        errors = exc.errors(include_url=False)
        best = min(errors, key=_error_rank)
        return translate_error(event, best)


@cache
def _fail_fast_validators(interface: Interface) -> dict[str, SchemaValidator]:
    adapters = ga.ADAPTERS if interface is Interface.GA else beta.ADAPTERS
    return {event_type: _fail_fast(adapter) for event_type, adapter in adapters.items()}


def _fail_fast(adapter: TypeAdapter[Any]) -> SchemaValidator:
    """The adapter's validator, with every list and dict stopping at its first bad element.

    pydantic has no such switch for a whole model, but lists and dicts take ``fail_fast``; it is
    set on a copy of the core schema. Each model class is replaced by a stand-in of the same
    name: pydantic-core would otherwise reuse the class's own prebuilt validator (without the
    switch) for nested models. The stand-ins are only ever validated into, then dropped.
    """
    schema = copy.deepcopy(adapter.core_schema)
    stand_ins: dict[type, type] = {}
    todo: list[Any] = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if kind in ("list", "dict", "set", "frozenset", "tuple"):
                node["fail_fast"] = True
            elif kind == "model":
                cls = node["cls"]
                node["cls"] = stand_ins.setdefault(cls, type(cls.__name__, (), {}))
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return SchemaValidator(schema)


def _error_rank(error: ErrorDetails) -> tuple[int, int]:
    """Prefer the deepest location, then the union member that fits the value's own type."""
    kind, value = error["type"], error.get("input")
    fits = (
        kind in ("extra_forbidden", "missing")
        or (kind == "literal_error" and isinstance(value, str))
        or (kind.startswith(("greater", "less")) and isinstance(value, int | float))
    )
    return (-len(api_path(error["loc"])), 0 if fits else 1)


def api_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's location as the API's param: ``session.tools[0].name``."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        elif (
            part.startswith(TAG_MARK)
            or part in _UNION_MEMBERS
            or part.endswith("()")
            or part.startswith(_UNION_MEMBER_PREFIXES)
            or "[" in part
        ):
            continue
        else:
            parts.append(part)
    return ".".join(parts)


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
}


def translate_error(event: dict[str, Any], error: ErrorDetails) -> InvalidEvent:
    path = api_path(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    eid = _event_id(event)
    if kind == "extra_forbidden":
        found = InvalidEvent("unknown_parameter", f"Unknown parameter: '{path}'.", path, eid)
    elif kind == "missing":
        found = InvalidEvent(
            "missing_required_parameter", f"Missing required parameter: '{path}'.", path, eid
        )
    elif kind == "union_tag_not_found":
        if not isinstance(value, dict):  # a string where an object belongs, e.g. "pcm16"
            return api_error(event, "invalid_type", path, "an object", value)
        path = f"{path}.type" if path else "type"
        if "type" in value:  # present but not a string
            return api_error(event, "invalid_type", path, "a string", value["type"])
        found = InvalidEvent(
            "missing_required_parameter", f"Missing required parameter: '{path}'.", path, eid
        )
    elif kind in ("literal_error", "union_tag_invalid", "enum"):
        found = _invalid_value(event, path, error)
    elif kind in _EXPECTED:
        return api_error(event, "invalid_type", path, _EXPECTED[kind], value)
    elif kind in ("string_too_long", "too_long"):
        found = _too_long(path, value, ctx, eid)
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        found = _out_of_range(path, value, kind, ctx, eid)
    else:
        found = InvalidEvent("invalid_value", f"Invalid value for '{path}': {error['msg']}.", path, eid)
    return _with_hint(event, found)


def _invalid_value(event: dict[str, Any], path: str, error: ErrorDetails) -> InvalidEvent:
    ctx = error.get("ctx") or {}
    expected = str(ctx.get("expected_tags") or ctx.get("expected") or "")
    options = [part.strip(" '") for part in expected.replace(" or ", ",").split(",") if part.strip()]
    options = [o.removeprefix(TAG_MARK).strip("'") for o in options]
    value = error.get("input")
    if error["type"] == "union_tag_invalid":
        value = ctx.get("tag", value)
        value = str(value).removeprefix(TAG_MARK)
        path = path + ".type" if not path.endswith("type") else path
        if value.startswith(_MESSAGE_TAG):  # items are told apart by type and role together
            return _invalid_role(event, path.removesuffix("type") + "role", value, options)
    shown = value if isinstance(value, str) else _json_text(value)
    message = f"Invalid value: '{shown}'. Supported values are: {quote_list(options)}."
    return InvalidEvent("invalid_value", message, path, _event_id(event))


_MESSAGE_TAG = "message."


def _invalid_role(event: dict[str, Any], path: str, tag: str, options: list[str]) -> InvalidEvent:
    """A message with a role it cannot have: name ``item.role`` and the roles, not the internal
    ``message.<role>`` tag (a value the app never wrote)."""
    role = event_value(event, path)
    roles = [o.removeprefix(_MESSAGE_TAG) for o in options if o.startswith(_MESSAGE_TAG)]
    if role is None:
        return InvalidEvent(
            "missing_required_parameter", f"Missing required parameter: '{path}'.", path, _event_id(event)
        )
    if not isinstance(role, str):
        return api_error(event, "invalid_type", path, "a string", role)
    message = f"Invalid value: '{role}'. Supported values are: {quote_list(roles)}."
    return InvalidEvent("invalid_value", message, path, _event_id(event))


def event_value(event: dict[str, Any], path: str) -> Any:
    """The value at an API param path such as ``item.role`` or ``response.input[0].role``."""
    value: Any = event
    for part in path.replace("]", "").split("."):
        name, _, index = part.partition("[")
        value = value.get(name) if isinstance(value, dict) else None
        if index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        elif index:
            return None
    return value


def _json_text(value: Any) -> str:
    """How the API quotes a non-string value; anything orjson cannot write is shown by repr."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # e.g. an integer beyond 64 bits (only from Python callers: orjson reads floats)
        return repr(value)


def _too_long(path: str, value: Any, ctx: dict[str, Any], eid: str | None) -> InvalidEvent:
    limit = ctx.get("max_length")
    size = len(value) if isinstance(value, str | list | dict) else 0
    noun = "string" if isinstance(value, str) else "object" if isinstance(value, dict) else "array"
    message = (
        f"Invalid '{path}': {noun} too long. Expected a {noun} with maximum length {limit}, "
        f"but got a {noun} with length {size} instead."
    )
    return InvalidEvent(f"{noun}_above_max_length", message, path, eid)


def _out_of_range(path: str, value: Any, kind: str, ctx: dict[str, Any], eid: str | None) -> InvalidEvent:
    limit = ctx.get("ge", ctx.get("gt", ctx.get("le", ctx.get("lt"))))
    number = "integer" if isinstance(value, int) and isinstance(limit, int) else "decimal"
    if kind.startswith("greater"):
        bound, op, side = (
            ctx.get("ge", ctx.get("gt")),
            ">=" if kind.endswith("equal") else ">",
            "below_min",
        )
    else:
        bound, op, side = (
            ctx.get("le", ctx.get("lt")),
            "<=" if kind.endswith("equal") else "<",
            "above_max",
        )
    words = "below minimum" if side == "below_min" else "above maximum"
    message = (
        f"Invalid '{path}': {number} {words} value. Expected a value {op} {bound}, but got {value} instead."
    )
    return InvalidEvent(f"{number}_{side}_value", message, path, eid)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), "a value")


def api_error(event: dict[str, Any], code: str, path: str, expected: str, value: Any) -> InvalidEvent:
    message = f"Invalid type for '{path}': expected {expected}, but got {_type_name(value)} instead."
    return _with_hint(event, InvalidEvent(code, message, path, _event_id(event)))


def _with_hint(event: dict[str, Any], error: InvalidEvent) -> InvalidEvent:
    try:
        hint = hint_for(event, error)
    except (TypeError, ValueError, AttributeError, IndexError, KeyError):
        hint = None  # a hint is a courtesy: odd input must never turn into a crash
    if not hint:
        return error
    return InvalidEvent(error.code, f"{error.message} Hint: {hint}", error.param, error.client_event_id)
