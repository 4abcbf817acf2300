"""Operator policy: fields the relay forces or forbids in the session and in every response.

A policy must not be dodged: a field forbidden or forced in the session is forbidden or forced in
``response.create`` too (a response may override instructions, tools, the output token cap...),
and the forced session fields, with the output token cap, are applied to the session from its
start (:meth:`Policy.session_baseline`, sent by the relay itself), so responses started by server
VAD, which no client event describes, are bound as well. The ``session.updated`` the client sees
comes from the API and so reflects what was actually applied.
"""

from __future__ import annotations

from typing import Any

from relay.core.errors import InvalidEvent
from relay.settings import Settings

_TOOL_TYPES = ("function", "mcp")
# The session fields a response.create can override for that response (reference §2.6).
RESPONSE_OVERRIDES = frozenset(
    {
        "instructions",
        "tools",
        "tool_choice",
        "output_modalities",
        "max_output_tokens",
        "prompt",
        "reasoning",
        "parallel_tool_calls",
        "audio",
    }
)


class Policy:
    def __init__(
        self,
        *,
        force_session: dict[str, Any] | None = None,
        force_response: dict[str, Any] | None = None,
        max_output_tokens: int | None = None,
        allowed_tool_types: list[str] | None = None,
        forbidden_session_fields: list[str] | None = None,
        allowed_transcription_models: list[str] | None = None,
        transcription_deployments: dict[str, str] | None = None,
    ) -> None:
        self.force_session = force_session or {}
        self.max_output_tokens = max_output_tokens
        self.allowed_tool_types = tuple(allowed_tool_types or _TOOL_TYPES)
        self.forbidden = tuple(forbidden_session_fields or ())
        self.transcription_models = tuple(allowed_transcription_models or ())
        # On Azure a transcription model is named by its deployment: the operator's model ->
        # deployment map applies to it as to the session's model.
        self.transcription_deployments = transcription_deployments or {}
        # What a response may not override: the session's forced fields, then the response's own.
        self.force_response = {**_response_part(self.force_session), **(force_response or {})}
        self.active = bool(
            self.force_session
            or self.force_response
            or max_output_tokens
            or allowed_tool_types
            or forbidden_session_fields
            or allowed_transcription_models
            or transcription_deployments
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            force_session=settings.policy_force_session,
            force_response=settings.policy_force_response,
            max_output_tokens=settings.policy_max_output_tokens,
            allowed_tool_types=settings.policy_allowed_tool_types,
            forbidden_session_fields=settings.policy_forbidden_session_fields,
            allowed_transcription_models=settings.allowed_transcription_models,
            transcription_deployments=(
                settings.azure_deployments if settings.upstream_kind == "azure" else None
            ),
        )

    def session_baseline(self) -> dict[str, Any] | None:
        """What the relay applies to every session as soon as it exists (None: nothing)."""
        baseline = dict(self.force_session)
        if self.max_output_tokens is not None:
            baseline["max_output_tokens"] = self.max_output_tokens
        return baseline or None

    def apply(self, event: dict[str, Any]) -> bool:
        """Enforce the policy on ``event`` in place; True if it changed anything."""
        if not self.active:
            return False
        kind = event.get("type")
        if kind == "session.update" and isinstance(event.get("session"), dict):
            return self._apply(event, event["session"], self.force_session, "session")
        if kind == "response.create":
            response = event.get("response")
            if response is None and (self.force_response or self.max_output_tokens is not None):
                response = event["response"] = {}
            if isinstance(response, dict):
                return self._apply(event, response, self.force_response, "response")
        return False

    def _apply(self, event: dict[str, Any], body: dict[str, Any], forced: dict[str, Any], where: str) -> bool:
        for name in self.forbidden:
            if _has(body, name):
                raise InvalidEvent(
                    "forbidden_parameter",
                    f"The relay does not allow '{where}.{name}' to be set.",
                    f"{where}.{name}",
                    event.get("event_id"),
                )
        for index, tool in enumerate(body.get("tools") or []):
            if isinstance(tool, dict) and tool.get("type") not in self.allowed_tool_types:
                raise InvalidEvent(
                    "forbidden_parameter",
                    f"The relay does not allow '{tool.get('type')}' tools.",
                    f"{where}.tools[{index}].type",
                    event.get("event_id"),
                )
        changed = where == "session" and self._transcription_model(event, body)
        for key, value in forced.items():
            if body.get(key) != value:
                body[key] = value
                changed = True
        cap = self.max_output_tokens
        unbounded = body.get("max_output_tokens") in (None, "inf")
        if cap is not None and (unbounded or body["max_output_tokens"] > cap):
            body["max_output_tokens"] = cap  # the session's from the start, every response's too
            changed = True
        return changed

    def _transcription_model(self, event: dict[str, Any], session: dict[str, Any]) -> bool:
        """Check the input transcription model against the allowlist; on Azure, name its
        deployment. True if the model was rewritten."""
        audio = session.get("audio")
        audio_input = audio.get("input") if isinstance(audio, dict) else None
        transcription = audio_input.get("transcription") if isinstance(audio_input, dict) else None
        model = transcription.get("model") if isinstance(transcription, dict) else None
        if not isinstance(model, str):
            return False
        assert isinstance(transcription, dict)
        if self.transcription_models and model not in self.transcription_models:
            allowed = ", ".join(f"'{m}'" for m in self.transcription_models)
            raise InvalidEvent(
                "invalid_value",
                f"Invalid value: '{model}'. This relay allows the transcription models {allowed}.",
                "session.audio.input.transcription.model",
                event.get("event_id"),
            )
        deployment = self.transcription_deployments.get(model)
        if deployment is None or deployment == model:
            return False
        transcription["model"] = deployment
        return True


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The API's patch semantics: objects merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in patch.items():
        old = merged.get(key)
        merged[key] = merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


def _response_part(session: dict[str, Any]) -> dict[str, Any]:
    part = {k: v for k, v in session.items() if k in RESPONSE_OVERRIDES and k != "audio"}
    output = (session.get("audio") or {}).get("output") if isinstance(session.get("audio"), dict) else None
    if isinstance(output, dict):
        part["audio"] = {"output": output}  # a response may choose its output voice and format
    return part


def _has(body: dict[str, Any], path: str) -> bool:
    """Whether a dotted field path (``instructions``, ``audio.output.voice``) is set in ``body``."""
    value: Any = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True
