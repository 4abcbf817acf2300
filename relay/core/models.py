"""Model policy: which model a client may ask for, and where it goes upstream.

Pure functions over settings values so the HTTP upgrade can refuse a disallowed model with 403
before any upstream connection is made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class ModelNotAllowed(Exception):
    """The requested model is outside the configured allowlist."""


def map_beta_model(model: str, model_map: Mapping[str, str]) -> str:
    """Map a beta model name (``gpt-4o-realtime-preview-...``) to GA; the longest prefix wins."""
    for prefix in sorted(model_map, key=len, reverse=True):
        if model.startswith(prefix):
            return model_map[prefix]
    return model


def resolve_model(
    requested: str | None,
    *,
    default: str,
    allowed: Sequence[str],
    beta_map: Mapping[str, str] | None = None,
) -> str:
    """The model to open upstream for a client's ``?model=`` (or the default when absent)."""
    model = requested or default
    if beta_map:
        model = map_beta_model(model, beta_map)
    if allowed and model not in allowed:
        raise ModelNotAllowed(f"model {model!r} is not allowed on this relay; allowed: {', '.join(allowed)}")
    return model


def azure_deployment(model: str, deployments: Mapping[str, str], fallback: str | None) -> str:
    """Azure names deployments, not models: map one to the other (else the default deployment)."""
    return deployments.get(model) or fallback or model
