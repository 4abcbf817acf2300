"""What must never leave the relay: provider keys, client tokens and anything shaped like them.

One place decides, and every way out uses it: log lines (``relay.observability.logging``), the
``error`` events and close reasons sent to clients, CLI messages. The configured secrets are
registered at start-up; the patterns catch keys the relay was never told about, such as the
fragment the API quotes back in ``invalid_api_key`` ("Incorrect API key provided: sk-proj-AB***").
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"
_secrets: set[str] = set()
# Provider keys (sk-..., sk-proj-..., even when masked with *), bearer credentials, the browser
# subprotocol that carries a token, resume tokens (subprotocol or header), and key-bearing query
# parameters (Azure's ?api-key=).
_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-*.]{3,}"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._\-~+/=]+"),
    re.compile(r"openai-insecure-api-key\.[^\s,'\"]+"),
    re.compile(r"relay-resume\.[^\s,'\"]+"),
    re.compile(r"relay_[A-Za-z0-9]+\.[A-Za-z0-9_\-]{32,}"),
    re.compile(r"(?i)(?<=[?&])(api[-_]key|access_token|token|key|sig)=[^&\s'\"]+"),
)


def register_secret(value: str) -> None:
    """A configured secret (provider key, client token) that must never be shown or logged."""
    if len(value) >= 4:
        _secrets.add(value)


def redact_text(text: str) -> str:
    """``text`` with every known secret and key-shaped string replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text
