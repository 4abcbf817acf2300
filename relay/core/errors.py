"""OpenAI-shaped error events and the relay's small exception tree.

The Realtime API reports problems as a server event
``{"type": "error", "event_id": ..., "error": {"type", "code", "message", "param", "event_id"}}``
(reference section 4). Everything the relay tells a client about a bad event uses that shape so
that client code written for the API handles it unchanged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

_ID_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Random bytes to id characters in one C call: byte b becomes _ID_ALPHABET[b % 62]. The slight
# bias (8 of 62 characters are a little likelier) is fine: ids name events and items, they are
# not secrets, which is also why a seeded PRNG serves instead of the OS's CSPRNG.
_TO_ID_CHARS = bytes(_ID_ALPHABET[b % len(_ID_ALPHABET)] for b in range(256))
_ids = random.Random()


def new_id(prefix: str, length: int = 21) -> str:
    """An id shaped like the API's (``event_`` / ``item_`` / ``sess_`` + 21 characters)."""
    return prefix + _ids.randbytes(length).translate(_TO_ID_CHARS).decode()


def error_event(
    code: str | None,
    message: str,
    *,
    param: str | None = None,
    client_event_id: str | None = None,
    error_type: str = "invalid_request_error",
) -> dict[str, Any]:
    """Build an ``error`` server event exactly as the API shapes it."""
    return {
        "type": "error",
        "event_id": new_id("event_"),
        "error": {
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    }


class RelayError(Exception):
    """Root of the relay's exceptions. Each knows how it is reported to the client."""

    code: str | None = "relay_error"
    error_type: str = "server_error"
    close_code: int = 1011

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_event(self, client_event_id: str | None = None) -> dict[str, Any]:
        return error_event(
            self.code,
            self.message,
            param=self.param,
            client_event_id=client_event_id,
            error_type=self.error_type,
        )


@dataclass(frozen=True, slots=True)
class InvalidEvent(Exception):
    """A client event the API would reject; never forwarded. Not fatal to the session."""

    code: str | None
    message: str
    param: str | None = None
    client_event_id: str | None = None

    def to_event(self) -> dict[str, Any]:
        return error_event(self.code, self.message, param=self.param, client_event_id=self.client_event_id)


def event_too_large(
    event_type: str | None, size: int, limit: int, client_event_id: str | None
) -> InvalidEvent:
    """A frame over the relay's size limit for its event type (refused before any parse)."""
    what = f"'{event_type}' events" if event_type else "events"
    message = (
        f"Event too large: the relay accepts {what} of up to {limit} bytes, but this one has {size} bytes."
    )
    return InvalidEvent("event_too_large", message, None, client_event_id)


def event_too_complex(detail: str, client_event_id: str | None) -> InvalidEvent:
    """An event whose structure is beyond what any real event needs (refused before validation)."""
    return InvalidEvent(
        "event_too_complex", f"Event too complex: this event {detail}.", None, client_event_id
    )


def duplicate_key(key: str, client_event_id: str | None) -> InvalidEvent:
    """An object with a key twice: the relay reads one value and the API might read the other."""
    message = f"Invalid event: the key '{key}' appears more than once in the same object."
    return InvalidEvent("duplicate_key", message, None, client_event_id)


class UpstreamError(RelayError):
    """The upstream failed; ``retryable`` tells a transient failure from a permanent one."""

    code = "upstream_error"

    def __init__(
        self, message: str, *, retryable: bool, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        if code is not None:
            self.code = code
        # 1013 "try again later" for transient failures, 1008 "policy violation" for permanent
        # ones (bad key, unknown model, quota): a client should not retry those blindly.
        self.close_code = 1013 if retryable else 1008


class HoldOverflow(RelayError):
    """Events were held for longer than allowed while the upstream was not ready."""

    code = "upstream_not_ready"
    close_code = 1013
