"""Phone calls (SIP through the Realtime API): what the relay checks and pins in a call's session.

A SIP call reaches the API as a ``realtime.call.incoming`` webhook; the app answers with
``POST /v1/realtime/calls/{call_id}/accept`` whose body is the session configuration itself (the
schema of a ``session.update``'s ``session``: RealtimeSessionCreateRequestGA in the OpenAPI spec),
and steers the call over ``/v1/realtime?call_id=...``.

The caller's line carries G.711 (the SDP OpenAI answers with offers PCMU), and the API does not
convert: an accept, or a later ``session.update``, that left the session's formats at PCM turned
the caller's audio into static (field failure F4; the API reset the formats when the body carried
``tools`` but no formats). So on a call the formats are pinned: absent ones are filled in with the
call's (a documented rewrite), and a PCM format is refused with a hint instead of played as noise.

Everything here is pure: the relay's HTTP endpoints (``relay.io.calls``) and its session code
call it; the simulator uses the accept validation to answer as the API would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from relay.core.errors import InvalidEvent
from relay.core.policy import Policy
from relay.core.validation import Validator

CALL_FORMATS: Final = ("audio/pcmu", "audio/pcma")
SIDES: Final = ("input", "output")
# Call ids are path segments upstream (``/calls/{call_id}/accept``): letters, digits, ``_`` and
# ``-`` only, as the API's ``rtc_...`` ids are, so no id can step to another path.
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_HINT = " Hint: "
_ACCEPT_TYPE_HINT = (
    'an accept body is the call\'s session configuration itself: add "type": "realtime" at its top level.'
)


def is_call_id(text: str) -> bool:
    return _CALL_ID.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class CallFormats:
    """The audio format types of a call's two directions (G.711 types)."""

    input: str = "audio/pcmu"
    output: str = "audio/pcmu"

    @classmethod
    def of(cls, session: Any, default: str) -> CallFormats:
        """The formats a call is accepted with: those the body names where they are G.711; a
        direction it leaves out gets the G.711 format named for the other one (one SIP leg has
        one codec), else ``default``."""
        named = {side: _format_type(session, side) for side in SIDES}
        g711 = [kind for kind in named.values() if kind in CALL_FORMATS]
        fallback = g711[0] if g711 else default
        picked = {side: kind if kind in CALL_FORMATS else fallback for side, kind in named.items()}
        return cls(picked["input"], picked["output"])

    def of_side(self, side: str) -> str:
        return self.input if side == "input" else self.output


def pin_call_formats(
    session_body: dict[str, Any],
    call_formats: CallFormats,
    *,
    fill: bool = True,
    param_prefix: str = "session.",
    event_id: str | None = None,
) -> bool:
    """Pin a call's session (a ``session.update``'s ``session``, or an accept body) to the call's
    G.711 formats, in place. Returns whether anything was written.

    A direction whose format is absent or null gets the call's (when ``fill``): the API once
    reset such a session to PCM. One naming a PCM format raises :class:`InvalidEvent`, with the
    param as the API would name it (``param_prefix`` + ``audio.input.format.type``). Formats of
    a shape the schema refuses are left for the schema's error.
    """
    changed = False
    for side in SIDES:
        fmt = _audio_side(session_body, side).get("format") if _has_side(session_body, side) else None
        if fmt is None:
            changed |= fill and _set_format(session_body, side, call_formats.of_side(side))
            continue
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if isinstance(kind, str) and kind not in CALL_FORMATS:
            raise pcm_on_call(
                kind, f"{param_prefix}audio.{side}.format.type", call_formats.of_side(side), event_id
            )
    return changed


def check_response_format(response: Any, call_formats: CallFormats, *, event_id: str | None = None) -> None:
    """A ``response.create`` on a call may choose its own output format: not a PCM one."""
    audio = response.get("audio") if isinstance(response, dict) else None
    output = audio.get("output") if isinstance(audio, dict) else None
    fmt = output.get("format") if isinstance(output, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if isinstance(kind, str) and kind not in CALL_FORMATS:
        raise pcm_on_call(kind, "response.audio.output.format.type", call_formats.output, event_id)


def pcm_on_call(kind: str, param: str, call_format: str, event_id: str | None) -> InvalidEvent:
    message = (
        f"Invalid value: '{kind}'. A phone call's audio is G.711: supported values on a call are "
        f"'audio/pcmu' and 'audio/pcma'.{_HINT}the caller's line carries {call_format} and the API "
        f"does not convert, so '{kind}' would reach the caller as static. Leave the format out "
        f'(the relay fills in the call\'s) or send {{"type": "{call_format}"}}.'
    )
    return InvalidEvent("invalid_value", message, param, event_id)


# ---------------------------------------------------------------------- the accept body
def validate_accept(body: Any, validator: Validator) -> None:
    """Check an accept body against the schema of a ``session.update``'s ``session``, with the
    same hints; errors name params from the body's root (``tools[0].type``), as REST errors do."""
    if not isinstance(body, dict):
        raise InvalidEvent(
            "invalid_type", f"Invalid type for body: expected an object, but got {_kind(body)} instead."
        )
    kind = body.get("type")
    if isinstance(kind, str) and kind != "realtime":  # a call's session is always a realtime one
        raise InvalidEvent(
            "invalid_value", f"Invalid value: '{kind}'. Supported values are: 'realtime'.", "type"
        )
    try:
        validator.check({"type": "session.update", "session": body})
    except InvalidEvent as exc:
        raise accept_error(exc) from None


def police_accept(body: dict[str, Any], policy: Policy) -> bool:
    """The operator's policy, as for a ``session.update``: an accept is the session's start, so
    forced fields and the output token cap go in here. True if it changed the body."""
    try:
        return policy.apply({"type": "session.update", "session": body})
    except InvalidEvent as exc:
        raise accept_error(exc) from None


def accept_error(exc: InvalidEvent) -> InvalidEvent:
    """A ``session.update`` error rebased onto an accept body (``session.x`` -> ``x``)."""
    sentence, _, hint = exc.message.partition(_HINT)
    param = exc.param
    if exc.code == "missing_required_parameter" and param == "session.type":
        hint = _ACCEPT_TYPE_HINT
    if param is not None:
        param = param.removeprefix("session").removeprefix(".") or None
    message = _rebase(sentence) + (_HINT + _rebase(hint) if hint else "")
    return InvalidEvent(exc.code, message, param)


def rest_error(exc: InvalidEvent) -> dict[str, Any]:
    """The REST API's error body (ErrorResponse in the OpenAPI spec)."""
    return {
        "error": {
            "message": exc.message,
            "type": "invalid_request_error",
            "param": exc.param,
            "code": exc.code,
        }
    }


def _rebase(text: str) -> str:
    return text.replace("'session.", "'")


# ---------------------------------------------------------------------- helpers
def _has_side(session: Any, side: str) -> bool:
    audio = session.get("audio") if isinstance(session, dict) else None
    return isinstance(audio, dict) and isinstance(audio.get(side), dict)


def _audio_side(session: dict[str, Any], side: str) -> dict[str, Any]:
    side_config: dict[str, Any] = session["audio"][side]
    return side_config


def _format_type(session: Any, side: str) -> str | None:
    if not _has_side(session, side):
        return None
    fmt = _audio_side(session, side).get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    return kind if isinstance(kind, str) else None


def _set_format(session: dict[str, Any], side: str, kind: str) -> bool:
    """Write ``{"type": kind}`` at ``audio.<side>.format``, creating the objects on the way (an
    absent or null ``audio`` / ``audio.<side>`` included); other shapes are left for the schema."""
    audio = session.get("audio")
    if audio is None:
        audio = session["audio"] = {}
    if not isinstance(audio, dict):
        return False
    side_config = audio.get(side)
    if side_config is None:
        side_config = audio[side] = {}
    if not isinstance(side_config, dict):
        return False
    side_config["format"] = {"type": kind}
    return True


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "a value"
    )
