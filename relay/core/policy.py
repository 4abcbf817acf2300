"""Operator policy: fields the relay forces or forbids in session.update and response.create.

Applied after validation and before forwarding; the ``session.updated`` the client then sees
comes from the API and so reflects what was actually applied.
"""

from __future__ import annotations

from typing import Any

from relay.core.errors import InvalidEvent
from relay.settings import Settings

_TOOL_TYPES = ("function", "mcp")


class Policy:
    def __init__(
        self,
        *,
        force_session: dict[str, Any] | None = None,
        force_response: dict[str, Any] | None = None,
        max_output_tokens: int | None = None,
        allowed_tool_types: list[str] | None = None,
        forbidden_session_fields: list[str] | None = None,
    ) -> None:
        self.force_session = force_session or {}
        self.force_response = force_response or {}
        self.max_output_tokens = max_output_tokens
        self.allowed_tool_types = tuple(allowed_tool_types or _TOOL_TYPES)
        self.forbidden = tuple(forbidden_session_fields or ())
        self.active = bool(
            self.force_session
            or self.force_response
            or max_output_tokens
            or allowed_tool_types
            or forbidden_session_fields
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            force_session=settings.policy_force_session,
            force_response=settings.policy_force_response,
            max_output_tokens=settings.policy_max_output_tokens,
            allowed_tool_types=settings.policy_allowed_tool_types,
            forbidden_session_fields=settings.policy_forbidden_session_fields,
        )

    def apply(self, event: dict[str, Any]) -> bool:
        """Enforce the policy on ``event`` in place; True if it changed anything."""
        if not self.active:
            return False
        kind = event.get("type")
        if kind == "session.update" and isinstance(event.get("session"), dict):
            return self._apply(event, event["session"], self.force_session, "session")
        if kind == "response.create":
            response = event.setdefault("response", {})
            if isinstance(response, dict):
                return self._apply(event, response, self.force_response, "response")
        return False

    def _apply(self, event: dict[str, Any], body: dict[str, Any], forced: dict[str, Any], where: str) -> bool:
        for name in self.forbidden:
            if name in body and where == "session":
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
        changed = False
        for key, value in forced.items():
            if body.get(key) != value:
                body[key] = value
                changed = True
        cap = self.max_output_tokens
        unbounded = body.get("max_output_tokens") in (None, "inf")
        over = cap is not None and (unbounded or body["max_output_tokens"] > cap)
        if over and (where == "response" or "max_output_tokens" in body):
            body["max_output_tokens"] = cap
            changed = True
        return changed
