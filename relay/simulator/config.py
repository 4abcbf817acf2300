"""Simulator settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.simulator.timing import REALISTIC, Timing

DEFAULT_MODELS = (
    "gpt-realtime",
    "gpt-realtime-mini",
    "gpt-realtime-2",
    "gpt-realtime-1.5",
    "gpt-realtime-2025-08-28",
    "gpt-realtime-mini-2025-10-06",
    "gpt-4o-realtime-preview",
    "gpt-4o-mini-realtime-preview",
)


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated Realtime API behaves. ``speed`` > 1 streams faster than real time;
    ``timing`` is how long it takes to connect, acknowledge and start answering."""

    # "ga": beta clients get beta_api_shape_disabled, as on api.openai.com today; "beta": clients
    # sending OpenAI-Beta get the beta shapes; "azure-preview": every session speaks beta.
    interface: str = "ga"
    api_keys: tuple[str, ...] = ()  # empty: any non-empty key is accepted
    models: tuple[str, ...] = DEFAULT_MODELS
    speed: float = 1.0
    # The live API's delays by default, so that what they break shows; Timing.fast() for tests
    # whose subject is not timing. A frozen dataclass: one shared default is safe.
    timing: Timing = REALISTIC
    session_max_s: float = 3600.0
    ping_interval_s: float = 20.0
    reply_text: str | None = None
    transcript_text: str | None = None
    audio_chunk_ms: int = 100
    max_sessions_kept: int = 2000  # closed sessions stay inspectable up to this many
    # Faults armed on every new session from the start, in the control API's JSON form, e.g.
    # {"kind": "drop", "after_event": "response.output_audio.delta", "count": 5}.
    session_faults: tuple[Mapping[str, Any], ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    # The inspection and fault API under /_sim/: it can read any session's text and inject
    # replies, so it is served only when asked for (tests, `relay simulate`), never by the
    # simulator embedded in the relay.
    control_api: bool = True
    # Phone calls: the live API's old behaviour behind field failure F4, for every call (a call
    # may also ask for it): an accept or session.update with tools but no audio formats resets
    # the formats to PCM, and an invalid accept is taken with the default PCM session.
    call_format_reset: bool = False
    # Benchmark hook: called with ("recv" | "send", frame) for every frame, on the event loop.
    probe: Callable[[str, bytes], None] | None = None
