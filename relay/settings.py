"""Settings: parsed once at start-up from the TOML file, then environment, then CLI flags.

Precedence (lowest to highest): defaults < ``RELAY_CONFIG`` TOML file < environment < CLI flags.
Every field is documented in ``config/relay.example.toml`` and the README; the names listed in
design.md ("The public interface") are fixed. The object is frozen after validation.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from relay.core.client_address import TrustedProxies
from relay.core.usage import Budget, PriceOverride

UpstreamKind = Literal["openai", "azure", "simulator"]

_CSV = Annotated[list[str], NoDecode]


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """The relay's whole configuration. See ``config/relay.example.toml``."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", frozen=True, extra="forbid", populate_by_name=True)

    # --- listening -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Worker processes on the port (SO_REUSEPORT), one per core to use; caps and /metrics hold
    # across them. With RELAY_REDIS_URL a resume may land on any of them.
    workers: int = Field(1, ge=1, le=256)
    tls_cert_file: str | None = None  # serve wss:// directly (else terminate TLS in front)
    tls_key_file: str | None = None

    # --- upstream --------------------------------------------------------------------------
    upstream: UpstreamKind | None = None  # None: openai if a key is set, else azure, else simulator
    upstream_url: str | None = None
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY", "openai_api_key"))
    openai_organization: str | None = Field(
        None, validation_alias=_env("OPENAI_ORGANIZATION", "openai_organization")
    )
    openai_project: str | None = Field(None, validation_alias=_env("OPENAI_PROJECT", "openai_project"))
    azure_openai_endpoint: str | None = Field(
        None, validation_alias=_env("AZURE_OPENAI_ENDPOINT", "azure_openai_endpoint")
    )
    azure_openai_api_key: SecretStr | None = Field(
        None, validation_alias=_env("AZURE_OPENAI_API_KEY", "azure_openai_api_key")
    )
    azure_openai_deployment: str | None = Field(
        None, validation_alias=_env("AZURE_OPENAI_DEPLOYMENT", "azure_openai_deployment")
    )
    # Set to use the older preview URL form (/openai/realtime?api-version=...), beta shapes.
    azure_api_version: str | None = Field(
        None, validation_alias=_env("AZURE_OPENAI_API_VERSION", "azure_api_version")
    )
    azure_use_entra_id: bool = False  # Microsoft Entra ID bearer tokens via azure-identity
    connect_timeout_s: float = Field(10.0, gt=0)

    # --- model policy ----------------------------------------------------------------------
    default_model: str = "gpt-realtime"
    allowed_models: _CSV = Field(default_factory=list)  # empty: any model
    # Input transcription models a client may name (audio.input.transcription.model); empty: any.
    allowed_transcription_models: _CSV = Field(default_factory=list)
    azure_deployments: dict[str, str] = Field(default_factory=dict)  # model -> deployment
    beta_model_map: dict[str, str] = Field(
        default_factory=lambda: {
            "gpt-4o-mini-realtime-preview": "gpt-realtime-mini",
            "gpt-4o-realtime-preview": "gpt-realtime",
        }
    )  # prefix -> GA model, longest prefix wins

    # --- client authentication and limits --------------------------------------------------
    client_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    client_token_hashes: _CSV = Field(default_factory=list)  # sha256 hex digests
    jwt_secret: SecretStr | None = None  # HS256
    jwt_public_key: str | None = None  # PEM text or a path to it (RS256 / ES256)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_identity_claim: str = "sub"
    jwt_tenant_claim: str = "tenant"
    allow_unauthenticated: bool = False  # only honoured on a loopback host
    allowed_origins: _CSV = Field(default_factory=list)  # empty: no Origin check
    max_sessions: int = Field(1000, ge=1)
    max_sessions_per_identity: int = Field(50, ge=1)  # per JWT identity (one user)
    # Per static token: usually one app's shared credential, so only the global cap by default.
    max_sessions_per_token: int | None = Field(None, ge=1)

    # --- transport -------------------------------------------------------------------------
    ping_interval_s: float = Field(20.0, gt=0)  # keepalive pings to both peers
    max_message_bytes: int = Field(24 * 1024 * 1024, ge=1024)  # 15 MiB append, base64 + JSON
    send_high_water_bytes: int = Field(1024 * 1024, ge=1024)
    send_low_water_bytes: int = Field(256 * 1024, ge=0)
    stuck_peer_timeout_s: float = Field(30.0, gt=0)
    drain_grace_s: float = Field(30.0, ge=0)
    # New sessions get 503 while the event loop runs this late (smoothed); 0: never refused.
    overload_lag_ms: float = Field(50.0, ge=0)
    # ... or while the process uses this share of its core (smoothed); 0: not judged. Set it
    # where another replica can take the session (the Kubernetes manifests do).
    overload_cpu_percent: float = Field(0.0, ge=0, le=100)
    # Every this many seconds, what outlived the young collections is frozen out of later full
    # ones (relay/observability/gc_pauses.py); 0: start-up's objects only.
    gc_freeze_every_s: float = Field(10.0, ge=0)

    # --- validation and holding ------------------------------------------------------------
    validate_events: bool = True
    hold_max_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    hold_max_events: int = Field(10_000, ge=1)
    hold_timeout_s: float = Field(15.0, gt=0)
    policy_force_session: dict[str, Any] = Field(default_factory=dict)  # merged into session.update
    policy_force_response: dict[str, Any] = Field(default_factory=dict)  # merged into response.create
    policy_max_output_tokens: int | None = Field(None, ge=1, le=4096)
    policy_allowed_tool_types: _CSV = Field(default_factory=list)  # empty: function and mcp
    policy_forbidden_session_fields: _CSV = Field(default_factory=list)

    # --- supervisor ------------------------------------------------------------------------
    rotate_after_s: float = Field(600.0, ge=0)  # 0 disables proactive rotation
    rotate_jitter_s: float = Field(60.0, ge=0)
    rotate_quiet_max_wait_s: float = Field(60.0, ge=0)
    reconnect_max_attempts: int = Field(8, ge=0)
    reconnect_base_delay_s: float = Field(0.2, ge=0)
    reconnect_max_delay_s: float = Field(10.0, ge=0)
    replay_max_items: int = Field(500, ge=0)
    replay_max_tokens: int = Field(24_000, ge=0)
    replay_user_audio: Literal["transcript", "audio"] = "transcript"
    rerequest_pending_response: bool = True  # after a drop: not started, or nothing of it sent yet
    notify_replacements: bool = False

    # --- client resume -----------------------------------------------------------------------
    # A client whose connection ends without a normal close (1006, a reset, a keepalive timeout,
    # 1001) is detached, not ended: its conversation goes on for this long, waiting for a resume.
    resume_grace_s: float = Field(60.0, ge=0)  # 0: no resume, a lost client ends the session
    resume_buffer_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # kept for a detached client
    resume_buffer_events: int = Field(20_000, ge=1)
    # Kept while attached: what may still be in flight (socket buffers) when a connection dies.
    resume_window_bytes: int = Field(128 * 1024, ge=0)
    resume_window_events: int = Field(128, ge=0)
    resume_cancel_responses: bool = False  # cancel a response streaming to a detached client
    # With RELAY_REDIS_URL: a conversation's owner renews its lease this often (a third of it);
    # a crashed owner's conversations can be taken over by another process after this long.
    session_lease_s: float = Field(10.0, ge=1, le=300)

    # --- beta clients ----------------------------------------------------------------------
    beta_clients: Literal["translate", "reject"] = "translate"

    # --- phone calls (relay/io/calls.py, relay/core/calls.py) --------------------------------
    calls_enabled: bool = True  # POST /v1/realtime/calls/{call_id}/{action} and ?call_id= sockets
    # A call's G.711 format when its accept names none (OpenAI's SIP answers with PCMU).
    calls_audio_format: Literal["audio/pcmu", "audio/pcma"] = "audio/pcmu"
    # Write the call's formats into an accept (and a call's session.update) that names none: the
    # API once reset such a session to PCM and callers heard static. PCM is refused either way.
    calls_fill_formats: bool = True
    calls_timeout_s: float = Field(10.0, gt=0)  # one call request to the upstream, in all

    # --- operations ------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # any case
    log_format: Literal["json", "console"] = "json"
    console_enabled: bool = True  # the voice console page at /
    simulator_speed: float = Field(1.0, gt=0)  # embedded simulator: 1 = real time

    # --- the HTTP edge: hostile clients -----------------------------------------------------
    # A request head must arrive whole within this (Slowloris); nginx's client_header_timeout
    # is 60 s, an honest client needs milliseconds. Also bounds a TLS handshake.
    header_timeout_s: float = Field(10.0, gt=0, le=60)
    # Idle keep-alive HTTP connections (console, /metrics scrapes) close after this.
    keepalive_timeout_s: float = Field(15.0, gt=0)
    # Connections whose request head is unfinished after a second (relay.io.guard): beyond
    # these, new ones are closed at once.
    max_unfinished_heads: int = Field(512, ge=1)
    max_unfinished_heads_per_peer: int = Field(32, ge=1)  # per IPv4 address or IPv6 /64
    # Failed authentications per peer (token bucket); beyond it 429 before credentials are read.
    # Reverse proxies in front of the relay (CIDRs): a request from one is from the address it
    # appended to X-Forwarded-For (relay.core.client_address). Empty: the header is never read.
    trusted_proxies: _CSV = Field(default_factory=list)
    auth_failures_per_s: float = Field(20.0, ge=0)  # 0: no limit
    auth_failure_burst: int = Field(50, ge=1)
    jwt_max_lifetime_s: float = Field(86400.0, gt=0)  # exp at most this far from iat (or now)

    # --- usage and budgets (relay/core/usage.py, relay/io/budgets.py) -----------------------
    # Per model: USD per 1M tokens (per_minute: per minute of duration-priced transcription),
    # merged over the built-in table; the key "default" prices models the table lacks.
    prices: dict[str, PriceOverride] = Field(default_factory=dict)
    # e.g. [{scope = "identity", period = "day", max_cost_usd = 5.0}]; environment: JSON.
    budgets: list[Budget] = Field(default_factory=list)
    # Shared by every worker and replica: budgets and conversations (a resume on any process).
    # Unset: in process (a client resumes on the process it left only).
    redis_url: SecretStr | None = None
    redis_timeout_s: float = Field(0.25, gt=0, le=10)  # per Redis command, connecting included
    # Redis unreachable: "open" allows and counts relay_budget_store_failures_total, "closed" refuses.
    budget_redis_failure: Literal["open", "closed"] = "open"
    budget_recheck_s: float = Field(10.0, gt=0)  # a session re-reads its budgets at most this often
    admin_token: SecretStr | None = None  # GET /admin/usage; unset: refused
    # Identity keys and groups with their own series in relay_identity_*/relay_group_* (else "other").
    usage_metrics_identities: _CSV = Field(default_factory=list)
    usage_metrics_groups: _CSV = Field(default_factory=list)

    @field_validator("redis_url", "admin_token", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(raw, str) and not raw.strip() else value

    @field_validator("usage_metrics_identities", "usage_metrics_groups", mode="before")
    @classmethod
    def _split_usage_csv(cls, value: Any) -> Any:
        return cls._split_csv(value)

    @model_validator(mode="after")
    def _check_usage(self) -> Settings:
        if self.admin_token is not None:
            admin = self.admin_token.get_secret_value()
            if any(admin == token.get_secret_value() for token in self.client_tokens):
                raise ValueError("admin_token must not be one of the client tokens")
        return self

    @field_validator(
        "openai_api_key", "azure_openai_api_key", "azure_openai_endpoint", "jwt_secret", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``KEY=`` (compose's ``${OPENAI_API_KEY:-}``) means no key, not an empty one: an empty
        provider key would pick that provider over the simulator, an empty JWT secret would
        accept tokens anyone can sign."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(raw, str) and not raw.strip() else value

    @field_validator(
        "allowed_models",
        "allowed_transcription_models",
        "client_token_hashes",
        "allowed_origins",
        "policy_allowed_tool_types",
        "policy_forbidden_session_fields",
        "trusted_proxies",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        TrustedProxies(value)  # each a network or an address: the error names the one that is not
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("client_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        return cls._split_csv(value)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.send_low_water_bytes > self.send_high_water_bytes:
            raise ValueError("send_low_water_bytes must not exceed send_high_water_bytes")
        if self.upstream == "azure" and not self.azure_openai_endpoint and not self.upstream_url:
            raise ValueError("upstream 'azure' needs AZURE_OPENAI_ENDPOINT (or RELAY_UPSTREAM_URL)")
        if self.upstream == "openai" and self.openai_api_key is None:
            raise ValueError("upstream 'openai' needs OPENAI_API_KEY")
        return self

    # --- derived ---------------------------------------------------------------------------
    @property
    def upstream_kind(self) -> UpstreamKind:
        if self.upstream is not None:
            return self.upstream
        if self.openai_api_key is not None:
            return "openai"
        if self.azure_openai_endpoint and (self.azure_openai_api_key or self.azure_use_entra_id):
            return "azure"
        return "simulator"

    @property
    def auth_configured(self) -> bool:
        return bool(
            self.client_tokens
            or self.client_token_hashes
            or self.jwt_secret is not None
            or self.jwt_public_key
        )

    def startup_problems(self) -> list[str]:
        """Reasons the relay must refuse to start (an open proxy is never an accident)."""
        problems: list[str] = []
        if not self.auth_configured:
            if not self.allow_unauthenticated:
                problems.append(
                    "no client authentication is configured: set RELAY_CLIENT_TOKENS, "
                    "RELAY_CLIENT_TOKEN_HASHES, RELAY_JWT_SECRET or RELAY_JWT_PUBLIC_KEY, or set "
                    "RELAY_ALLOW_UNAUTHENTICATED=true on a loopback host"
                )
            elif not is_loopback(self.host):
                problems.append(
                    f"RELAY_ALLOW_UNAUTHENTICATED is only allowed on a loopback host, not {self.host!r}"
                )
        if self.workers > 1 and self.port == 0:
            problems.append("several workers share one port: give RELAY_PORT (not 0) with RELAY_WORKERS")
        return problems


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Defaults < TOML file (``config_file`` or ``RELAY_CONFIG``) < environment < ``overrides``.

    ``overrides`` are the CLI flags; ``None`` values (flags not given) are ignored.
    """
    path = config_file or os.environ.get("RELAY_CONFIG")
    cli = {key: value for key, value in overrides.items() if value is not None}
    if not path:
        return Settings(**cli)
    if not Path(path).is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=path, toml_table_header=("relay",))

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    return _FileSettings(**cli)
