"""A function call's arguments that fit the tool's declared parameters, as a model's would.

Apps and agent frameworks parse the arguments against the tool's JSON schema before they run
the tool (the Agents SDK refuses ``{}`` for a tool with a required ``city``), so a simulator
answering ``{}`` for every tool exercises only their error paths. Values are deterministic: a
string is a proper name from what the user said (``"Paris"`` from "What's the weather in
Paris?") or a placeholder, a number 1, an enum its first member.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_MAX_DEPTH = 6  # nested objects and arrays filled this deep; a recursive $ref stops here
_PROPER_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-z]+(?:\s[A-Z][a-z]+)*)")
_PLACEHOLDER = "example"


def arguments_for(parameters: Any, said: str = "") -> str:
    """The arguments (a JSON object, as text) for a tool declared with ``parameters``."""
    if not isinstance(parameters, dict):
        return "{}"
    value = _value(parameters, parameters, said, 0)
    return orjson.dumps(value if isinstance(value, dict) else {}).decode()


def _value(schema: Any, root: dict[str, Any], said: str, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _value(_resolve(ref, root), root, said, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        choices = schema.get(key)
        if isinstance(choices, list):
            usable = [c for c in choices if not (isinstance(c, dict) and c.get("type") == "null")]
            if usable:
                return _value(usable[0], root, said, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or (kind is None and "properties" in schema):
        return _object(schema, root, said, depth)
    if kind == "array":
        count = schema.get("minItems", 1)
        item = _value(schema.get("items", {"type": "string"}), root, said, depth + 1)
        return [item] * (count if isinstance(count, int) and 0 <= count <= 8 else 1)
    if kind == "string":
        return _string(said)
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        return low if isinstance(low, int | float) and low > 1 else 1
    if kind == "boolean":
        return True
    return None


def _object(schema: dict[str, Any], root: dict[str, Any], said: str, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = schema.get("required")
    names = [n for n in required if n in properties] if isinstance(required, list) else list(properties)
    return {name: _value(properties[name], root, said, depth + 1) for name in names}


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    """A local reference (``#/$defs/Name``); anything else resolves to nothing."""
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _string(said: str) -> str:
    """A proper name the user said (not a sentence's first word), else a placeholder."""
    found = _PROPER_NAME.search(said)
    return found.group(1) if found else _PLACEHOLDER
