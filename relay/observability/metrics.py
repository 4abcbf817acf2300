"""Prometheus metrics on a registry passed in (never the global default).

Names follow Prometheus conventions: ``relay_`` prefix, base units (seconds, bytes), ``_total``
for counters. Label values come from closed sets (event types from the protocol lists, error
codes, causes), never ids or free text, so series stay bounded.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from relay import __version__
from relay.core import speedups
from relay.observability.frame_metrics import FrameMetrics

# From 50 µs (a frame through the relay) to 1 s (a stalled peer).
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
REPLAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RelayMetrics:
    """Every metric the relay exports; one instance per application."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.sessions_active = Gauge("relay_sessions_active", "Sessions open now.", registry=r)
        self.event_loop_lag_seconds = Gauge(
            "relay_event_loop_lag_seconds",
            "How late the event loop runs its timers (smoothed): what every frame waits.",
            registry=r,
        )
        self.cpu_share = Gauge(
            "relay_cpu_share",
            "The process's CPU time per second (smoothed over ~0.5 s): the share of its one core in use.",
            registry=r,
        )
        self.overloaded = Gauge(
            "relay_overloaded",
            "1 while new sessions are refused for event loop lag or CPU share.",
            registry=r,
        )
        self.sessions_total = Counter(
            "relay_sessions", "Client sessions ended, by outcome.", ["outcome"], registry=r
        )
        self.upstream_connects_total = Counter(
            "relay_upstream_connects",
            "Upstream connection attempts by provider and result.",
            ["provider", "result"],
            registry=r,
        )
        self.upstream_replacements_total = Counter(
            "relay_upstream_replacements",
            "Upstream sessions replaced, by cause (rotation or the close that forced it).",
            ["cause"],
            registry=r,
        )
        self.replay_duration_seconds = Histogram(
            "relay_replay_duration_seconds",
            "Time to replay a session onto a new upstream.",
            buckets=REPLAY_BUCKETS,
            registry=r,
        )
        self.replay_items_total = Counter(
            "relay_replay_items", "Conversation items replayed or trimmed.", ["kind"], registry=r
        )
        self.client_gap_seconds = Histogram(
            "relay_client_gap_seconds",
            "Time a client's traffic was held while its upstream was replaced.",
            buckets=REPLAY_BUCKETS,
            registry=r,
        )
        self.rotation_prepare_seconds = Histogram(
            "relay_rotation_prepare_seconds",
            "Time from a proactive rotation's start to its switch (the old upstream serves meanwhile).",
            buckets=REPLAY_BUCKETS,
            registry=r,
        )
        self.upstream_events_hidden_total = Counter(
            "relay_upstream_events_hidden",
            "Upstream events the supervisor consumed instead of showing: end-of-life notices "
            "(session_expired) and errors of the relay's own replay events.",
            ["reason"],
            registry=r,
        )
        self.client_errors_suppressed_total = Counter(
            "relay_client_errors_suppressed",
            "Error events for refused client events not sent because the client exceeded the "
            "relay's error rate (a flood of bad frames); each refusal is still counted by code.",
            registry=r,
        )
        self.client_detached_total = Counter(
            "relay_client_detached",
            "Clients whose connection ended without a normal close, kept for a resume.",
            registry=r,
        )
        self.detached_sessions = Gauge(
            "relay_detached_sessions", "Conversations waiting for their client to resume.", registry=r
        )
        self.resumes_total = Counter(
            "relay_resumes",
            "Resumes by result: ok, gap (the client's last event was older than the log), refused "
            "(wrong_token, wrong_identity, gone), and conversations lost waiting (grace_expired, "
            "buffer_full).",
            ["result"],
            registry=r,
        )
        self.session_store_up = Gauge(
            "relay_session_store_up",
            "1 while the shared session store (Redis) answers; 0: conversations go on where they "
            "are, but a client cannot resume on another process.",
            registry=r,
        )
        self.session_store_failures_total = Counter(
            "relay_session_store_failures",
            "Session store operations that failed (Redis unreachable), by operation.",
            ["operation"],
            registry=r,
        )
        self.session_store_events_total = Counter(
            "relay_session_store_events",
            "Conversations fenced out by a newer owner (fenced_out).",
            ["event"],
            registry=r,
        )
        self.sessions_moved_total = Counter(
            "relay_sessions_moved",
            "Conversations handed to another process: drain (a deploy), released (the client came "
            "back elsewhere), taken_over (this process lost it), and arrived here (takeover).",
            ["reason"],
            registry=r,
        )
        self.client_events_deduplicated_total = Counter(
            "relay_client_events_deduplicated",
            "Client events sent again (same event_id or item id) and not forwarded twice.",
            registry=r,
        )
        self.audio_split_samples_total = Counter(
            "relay_audio_split_samples",
            "Audio appends that ended mid-sample (legal: the API's buffer is a byte stream).",
            registry=r,
        )
        self.validation_rejections_total = Counter(
            "relay_validation_rejections",
            "Client events rejected by the relay, by error code.",
            ["code"],
            registry=r,
        )
        self.held_events = Gauge(
            "relay_held_events", "Client events held until the upstream is ready.", registry=r
        )
        self.held_bytes = Gauge(
            "relay_held_bytes",
            "Bytes of client events held until the upstream is ready.",
            registry=r,
        )
        self.backpressure_pauses_total = Counter(
            "relay_backpressure_pauses",
            "Times the relay stopped reading a peer because the other side was slow.",
            ["direction"],
            registry=r,
        )
        self.auth_rejections_total = Counter(
            "relay_auth_rejections",
            "Upgrades refused before the WebSocket handshake, by reason.",
            ["reason"],
            registry=r,
        )
        self.beta_dropped_fields_total = Counter(
            "relay_beta_dropped_fields",
            "Beta fields with no GA meaning dropped during translation.",
            ["field"],
            registry=r,
        )
        self.gc_pause_seconds = Histogram(
            "relay_gc_pause_seconds",
            "Event-loop stops by Python's cyclic garbage collector, by generation: every session "
            "on the process waits them out.",
            ["generation"],
            buckets=GC_PAUSE_BUCKETS,
            registry=r,
        )
        self.gc_collected_objects_total = Counter(
            "relay_gc_collected_objects",
            "Objects the cyclic collector found unreachable, by generation: cycles that reference "
            "counting could not free (the relay makes none; growth points at a leak's source).",
            ["generation"],
            registry=r,
        )
        self.gc_frozen_objects = Gauge(
            "relay_gc_frozen_objects",
            "Objects kept out of every collection (gc.freeze), counted at start-up and whenever "
            "the process had no session: what stays frozen then is not any session's.",
            registry=r,
        )
        self.build_info = Info(
            "relay_build", "Relay version, and whether its per-frame code is compiled.", registry=r
        )
        self.build_info.info({"version": __version__, "speedups": speedups.build()})
        # Counted per frame, so kept as plain integers and rendered at scrape time.
        self.frames = FrameMetrics(LATENCY_BUCKETS)
        r.register(self.frames)
        self.frame = self.frames.frame
        self.latency = self.frames.latency
        # The HTTP edge against hostile clients (relay/io/guard.py, the same-origin check of an
        # unauthenticated relay): closed sets of reasons, never peers.
        self.edge_refusals_total = Counter(
            "relay_edge_refusals",
            "Connections closed or requests refused at the HTTP edge, by reason: header_timeout, "
            "unfinished_heads, peer_unfinished_heads (slow or idle clients); host_not_allowed, "
            "cross_site_origin (an unauthenticated relay called from a web page).",
            ["reason"],
            registry=r,
        )
        self.edge_unfinished_heads = Gauge(
            "relay_edge_unfinished_heads",
            "Connections open now whose first request head has not arrived whole.",
            registry=r,
        )
        # Usage and budgets (relay/io/budgets.py), counted once per response or transcription.
        # Models are the price table's names or "other"; identities and groups have their own
        # series only when listed in RELAY_USAGE_METRICS_IDENTITIES / _GROUPS, else "other".
        self.tokens_total = Counter(
            "relay_tokens",
            "Tokens the provider reported, by kind (input_text, input_audio, input_image, "
            "input_cached, output_text, output_audio; exclusive) and model.",
            ["kind", "model"],
            registry=r,
        )
        self.cost_usd_total = Counter(
            "relay_cost_usd", "Estimated cost in USD from the price table, by model.", ["model"], registry=r
        )
        self.transcription_seconds_total = Counter(
            "relay_transcription_seconds",
            "Audio seconds of duration-priced input transcription, by model.",
            ["model"],
            registry=r,
        )
        self.identity_tokens_total = Counter(
            "relay_identity_tokens", "Tokens by listed client identity.", ["identity"], registry=r
        )
        self.identity_cost_usd_total = Counter(
            "relay_identity_cost_usd", "Estimated USD by listed client identity.", ["identity"], registry=r
        )
        self.group_tokens_total = Counter(
            "relay_group_tokens", "Tokens by listed group.", ["group"], registry=r
        )
        self.group_cost_usd_total = Counter(
            "relay_group_cost_usd", "Estimated USD by listed group.", ["group"], registry=r
        )
        self.budget_refusals_total = Counter(
            "relay_budget_refusals",
            "Upgrades and response.create refused over a budget, by scope, period and where "
            '(upgrade, response); scope "store" when the counters were unreachable (fail closed).',
            ["scope", "period", "where"],
            registry=r,
        )
        self.budget_store_failures_total = Counter(
            "relay_budget_store_failures",
            "Budget counter operations that failed (Redis unreachable), by operation: check, spend, report.",
            ["operation"],
            registry=r,
        )
        # Phone calls (relay/io/calls.py): the call endpoints' requests, and the G.711 formats
        # the relay wrote into a call's session (field failure F4).
        self.call_requests_total = Counter(
            "relay_call_requests",
            "Requests to /v1/realtime/calls/{call_id}/{action}, by action and result: ok, "
            "upstream_4xx, upstream_5xx, upstream_error (unreachable or timed out), refused (by the "
            "relay: a bad accept or call id), unauthorized.",
            ["action", "result"],
            registry=r,
        )
        self.call_format_fills_total = Counter(
            "relay_call_format_fills",
            "Accepts and call session.updates into which the relay wrote the call's G.711 formats.",
            ["where"],
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
