"""Structured logs with structlog: JSON lines by default, secrets and audio always redacted.

Only the CLI calls :func:`configure_logging`; library code just asks for a logger. The redaction
processor runs last before rendering, so no code path can log a provider key, a client token or an
audio payload by accident.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

from relay.core.redaction import REDACTED, redact_text, register_secret

_AUDIO_KEYS = frozenset({"audio", "delta"})
_SECRET_KEYS = frozenset({"authorization", "api_key", "api-key", "token", "password", "secret"})


def _redact_value(key: str, value: Any) -> Any:
    lowered = key.lower()
    if lowered in _SECRET_KEYS:
        return REDACTED
    if lowered in _AUDIO_KEYS and isinstance(value, str | bytes) and len(value) > 64:
        return f"[{len(value)} bytes]"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: scrub every field of the event before it is rendered."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(key, value)
    return event_dict


def configure_logging(
    level: str = "INFO", fmt: Literal["json", "console"] = "json", stream: TextIO | None = None
) -> None:
    """Set up structlog (and the stdlib root logger, for aiohttp's own messages)."""
    numeric = logging.getLevelName(level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        stream=stream or sys.stderr,
        format="%(levelname)s %(name)s %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:  # aiohttp's own messages and tracebacks too
        handler.setFormatter(RedactingFormatter(handler.formatter))


class RedactingFormatter(logging.Formatter):
    """The stdlib's records (aiohttp's access and error logs, tracebacks) go through the same
    redaction as the relay's own lines: a key in an exception message must not slip out there."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record))


__all__ = ["REDACTED", "configure_logging", "get_logger", "redact_processor", "register_secret"]


def get_logger(**bound: Any) -> Any:
    """A logger with ``bound`` context (relay session id, client identity, ...)."""
    return structlog.get_logger("relay").bind(**bound)
