"""Per-session beta <-> GA translation, driven by the tables in ``relay.core.beta``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import orjson

from relay.core.beta import (
    _FAST_RENAMES,
    DROPPED_RESPONSE_FIELDS,
    DROPPED_SESSION_FIELDS,
    PASS_THROUGH_CLIENT,
    RESPONSE_FIELDS,
    SERVER_RENAMES,
    SESSION_FIELDS,
    fields_to_beta,
    fields_to_ga,
    item_to_beta,
    item_to_ga,
    param_to_beta,
)
from relay.core.errors import InvalidEvent
from relay.core.models import map_beta_model

Event = dict[str, Any]
_ITEM_EVENTS = frozenset(
    {
        "conversation.item.created",
        "conversation.item.retrieved",
        "response.output_item.added",
        "response.output_item.done",
    }
)


class BetaTranslator:
    """Translates one beta client's events to GA and the GA server's events back to beta."""

    def __init__(self, *, model_map: Mapping[str, str] | None = None) -> None:
        self.model_map = dict(model_map or {})
        self.dropped_fields: list[str] = []
        self.transcription = False  # the client configures a transcription session

    # ------------------------------------------------------------------ client -> upstream
    def client_to_ga(self, event: Event) -> list[Event]:
        kind = event.get("type")
        try:
            if kind in PASS_THROUGH_CLIENT:
                return [copy.deepcopy(event)]
            if kind == "session.update":
                return [self._session_update(event)]
            if kind == "transcription_session.update":
                return [self._transcription_update(event)]
            if kind == "conversation.item.create":
                return [{**copy.deepcopy(event), "item": item_to_ga(event["item"])}]
            if kind == "response.create":
                return [self._response_create(event)]
        except InvalidEvent as exc:
            raise InvalidEvent(exc.code, exc.message, exc.param, event.get("event_id")) from None
        raise InvalidEvent(
            "invalid_value",
            f"'{kind}' is not available on this session: the relay speaks "
            "GA upstream, where it has no equivalent (it is WebRTC/SIP only).",
            "type",
            event.get("event_id"),
        )

    def _session_update(self, event: Event) -> Event:
        beta = dict(event["session"])
        model = beta.get("model")
        if isinstance(model, str):
            beta["model"] = map_beta_model(model, self.model_map)
        session = fields_to_ga(beta, SESSION_FIELDS, DROPPED_SESSION_FIELDS, "session", self.dropped_fields)
        return self._event(event, "session.update", session={"type": "realtime", **session})

    def _transcription_update(self, event: Event) -> Event:
        self.transcription = True
        beta = event["session"]
        audio_input: dict[str, Any] = {}
        table = {
            "input_audio_format": "format",
            "input_audio_transcription": "transcription",
            "turn_detection": "turn_detection",
            "input_audio_noise_reduction": "noise_reduction",
        }
        ga_update = fields_to_ga(
            {k: v for k, v in beta.items() if k in table},
            SESSION_FIELDS,
            DROPPED_SESSION_FIELDS,
            "session",
            self.dropped_fields,
        )
        audio_input.update(ga_update.get("audio", {}).get("input", {}))
        session: dict[str, Any] = {"type": "transcription", "audio": {"input": audio_input}}
        if "include" in beta:
            session["include"] = copy.deepcopy(beta["include"])
        if "client_secret" in beta:
            self.dropped_fields.append("session.client_secret")
        return self._event(event, "session.update", session=session)

    def _response_create(self, event: Event) -> Event:
        params = event.get("response")
        if not isinstance(params, dict):
            return copy.deepcopy(event)
        inputs = params.get("input")
        beta = {k: v for k, v in params.items() if k != "input"}
        response = fields_to_ga(
            beta, RESPONSE_FIELDS, DROPPED_RESPONSE_FIELDS, "response", self.dropped_fields
        )
        if isinstance(inputs, list):
            response["input"] = [_input_to_ga(item) for item in inputs]
        return self._event(event, "response.create", response=response)

    @staticmethod
    def _event(original: Event, kind: str, **body: Any) -> Event:
        translated: Event = {"type": kind}
        if "event_id" in original:
            translated["event_id"] = original["event_id"]
        translated.update(body)
        return translated

    # ------------------------------------------------------------------ upstream -> client
    def server_frame_to_beta(self, raw: bytes) -> bytes | None:
        """Rename a hot delta event without parsing it; None when the shortcut does not apply."""
        for ga_prefix, beta_prefix in _FAST_RENAMES:
            if raw.startswith(ga_prefix):
                return beta_prefix + raw[len(ga_prefix) :]
        return None

    def server_to_beta(self, event: Event) -> Event | None:
        kind = str(event.get("type"))
        renamed = SERVER_RENAMES.get(kind, kind)
        if renamed is None:
            return None
        beta = dict(event)
        beta["type"] = renamed
        if kind in ("session.created", "session.updated"):
            beta = self._session_to_beta(beta, kind)
        elif renamed in _ITEM_EVENTS:
            beta["item"] = item_to_beta(beta.get("item"))
        elif kind in ("response.created", "response.done"):
            beta["response"] = _response_to_beta(beta.get("response"))
        elif kind == "error":
            beta["error"] = _error_to_beta(beta.get("error"))
        return beta

    def server_bytes_to_beta(self, raw: bytes, event: Event | None) -> bytes | None:
        """The beta frame for one GA server frame (None: not shown to a beta client)."""
        fast = self.server_frame_to_beta(raw)
        if fast is not None:
            return fast
        parsed = event if event is not None else orjson.loads(raw)
        translated = self.server_to_beta(parsed)
        if translated is None:
            return None
        return raw if translated == parsed else orjson.dumps(translated)

    def _session_to_beta(self, event: Event, kind: str) -> Event:
        session = event.get("session")
        if not isinstance(session, dict):
            return event
        beta = fields_to_beta(session, SESSION_FIELDS)
        for key in ("id", "object", "expires_at"):
            if key in session:
                beta[key] = session[key]
        if session.get("type") == "transcription" or self.transcription:
            event["type"] = kind.replace("session.", "transcription_session.")
            beta["object"] = "realtime.transcription_session"
        else:
            beta["object"] = "realtime.session"
        event["session"] = beta
        return event


def _input_to_ga(item: Any) -> Any:
    if isinstance(item, dict) and item.get("type") == "item_reference":
        return copy.deepcopy(item)
    return item_to_ga(item) if isinstance(item, dict) else item


def _response_to_beta(response: Any) -> Any:
    if not isinstance(response, dict):
        return response
    beta = {k: v for k, v in response.items() if k not in ("output_modalities", "audio", "max_output_tokens")}
    beta.update(
        fields_to_beta(
            response,
            {k: v for k, v in RESPONSE_FIELDS.items() if k in ("modalities", "voice", "output_audio_format")},
        )
    )
    if "max_output_tokens" in response:
        beta["max_output_tokens"] = response["max_output_tokens"]
    beta["output"] = [item_to_beta(item) for item in response.get("output") or []]
    return beta


def _error_to_beta(error: Any) -> Any:
    if isinstance(error, dict) and isinstance(error.get("param"), str):
        param = error["param"]
        beta_param = param_to_beta(param)
        if beta_param != param:
            error = {
                **error,
                "param": beta_param,
                "message": str(error.get("message", "")).replace(f"'{param}'", f"'{beta_param}'"),
            }
    return error
