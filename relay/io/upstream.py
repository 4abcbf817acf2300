"""Opening upstream Realtime sessions: OpenAI, Azure OpenAI (GA and preview) or the simulator.

The connector maps every way a handshake can fail onto :class:`UpstreamError` with a
``retryable`` flag, so the session can tell the client whether retrying makes sense (1013) or not
(1008), and the supervisor knows whether to reconnect.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from yarl import URL

from relay.core.errors import UpstreamError
from relay.core.models import azure_deployment
from relay.core.protocol import BETA_HEADER_VALUE, Interface
from relay.core.websocket import HandshakeError
from relay.io import websocket
from relay.io.websocket import WebSocketConnection
from relay.settings import Settings

OPENAI_REALTIME_URL = "wss://api.openai.com/v1/realtime"
SIMULATOR_KEY = "simulator-key"

TokenProvider = Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where and how to open one upstream session. Never logged whole: headers hold the key."""

    provider: str
    url: URL
    headers: dict[str, str] = field(repr=False)
    interface: Interface = Interface.GA


class UpstreamConfig:
    """Builds :class:`UpstreamTarget` for a model from the settings (and Entra ID tokens)."""

    def __init__(
        self,
        settings: Settings,
        *,
        simulator_url: str | None = None,
        token_provider: TokenProvider | None = None,
    ) -> None:
        self._settings = settings
        self._simulator_url = simulator_url
        self._token_provider = token_provider
        self.provider = settings.upstream_kind

    @property
    def interface(self) -> Interface:
        azure_preview = self.provider == "azure" and self._settings.azure_api_version
        return Interface.BETA if azure_preview else Interface.GA

    async def target(
        self,
        model: str | None,
        relay_session_id: str,
        *,
        intent: str = "realtime",
        call_id: str | None = None,
    ) -> UpstreamTarget:
        """Where to open a session: ``model`` names a realtime model (an Azure deployment after
        mapping); a transcription session (``intent="transcription"``) goes without one, as the
        API wants it (reference §1.1), or with the Azure deployment the client named."""
        headers = {"X-Relay-Session-Id": relay_session_id}
        if self.provider == "openai":
            url, auth = self._openai()
        elif self.provider == "azure":
            url, auth = await self._azure()
        else:
            url, auth = self._simulator()
        headers.update(auth)
        if self.interface is Interface.BETA:
            headers["OpenAI-Beta"] = BETA_HEADER_VALUE
        # A phone call's control socket names only the call: its model was chosen at the accept.
        query = url.update_query(call_id=call_id) if call_id else self._query(url, model, intent)
        return UpstreamTarget(self.provider, query, headers, self.interface)

    def _query(self, url: URL, model: str | None, intent: str) -> URL:
        s = self._settings
        if self.provider == "azure":
            deployment = (
                azure_deployment(model, s.azure_deployments, s.azure_openai_deployment) if model else None
            )
            if s.azure_api_version:  # the older preview form, beta event shapes
                url = url.update_query({"api-version": s.azure_api_version})
                return url.update_query(_intent_query("deployment", deployment, intent))
            return url.update_query(
                _intent_query("model" if intent == "realtime" else "deployment", deployment, intent)
            )
        return url.update_query(_intent_query("model", model, intent))

    def _openai(self) -> tuple[URL, dict[str, str]]:
        s = self._settings
        assert s.openai_api_key is not None  # checked by Settings
        headers = {"Authorization": f"Bearer {s.openai_api_key.get_secret_value()}"}
        if s.openai_organization:
            headers["OpenAI-Organization"] = s.openai_organization
        if s.openai_project:
            headers["OpenAI-Project"] = s.openai_project
        return URL(s.upstream_url or OPENAI_REALTIME_URL), headers

    async def _azure(self) -> tuple[URL, dict[str, str]]:
        s = self._settings
        if s.upstream_url:
            url = URL(s.upstream_url)
        else:
            endpoint = URL(s.azure_openai_endpoint or "")
            scheme = "ws" if endpoint.scheme in ("http", "ws") else "wss"
            path = "/openai/realtime" if s.azure_api_version else "/openai/v1/realtime"
            url = endpoint.with_scheme(scheme).with_path(path)
        if s.azure_openai_api_key is not None:
            return url, {"api-key": s.azure_openai_api_key.get_secret_value()}
        if self._token_provider is None:
            raise UpstreamError("Azure Entra ID is enabled but no token provider", retryable=False)
        return url, {"Authorization": f"Bearer {await self._token_provider()}"}

    def _simulator(self) -> tuple[URL, dict[str, str]]:
        url = self._settings.upstream_url or self._simulator_url
        if url is None:
            raise UpstreamError("the embedded simulator is not running", retryable=True)
        return URL(url), {"Authorization": f"Bearer {SIMULATOR_KEY}"}


def _intent_query(key: str, name: str | None, intent: str) -> dict[str, str]:
    """``model=`` (or ``deployment=``) for a realtime session; ``intent=transcription`` (with the
    deployment, if one was named) for a transcription session."""
    if intent == "transcription":
        return {"intent": "transcription", **({key: name} if name else {})}
    return {key: name} if name else {}


async def connect(target: UpstreamTarget, settings: Settings) -> WebSocketConnection:
    """Open the upstream WebSocket or raise :class:`UpstreamError` saying what failed."""
    try:
        return await websocket.connect(
            target.url,
            target.headers,
            max_size=settings.max_message_bytes,
            open_timeout_s=settings.connect_timeout_s,
        )
    except HandshakeError as exc:
        if exc.status < 200:  # no HTTP answer at all, or a broken 101
            raise UpstreamError(
                f"the upstream's handshake failed: {exc}",
                retryable=exc.status == 0,
                code="upstream_unreachable" if exc.status == 0 else "upstream_refused",
            ) from None
        raise _handshake_error(exc.status) from None
    except ssl.SSLError as exc:
        raise UpstreamError(
            f"TLS handshake with the upstream failed: {type(exc).__name__}",
            retryable=True,
            code="upstream_tls_error",
        ) from None
    except (TimeoutError, OSError) as exc:
        raise UpstreamError(
            f"the upstream is unreachable: {type(exc).__name__}",
            retryable=True,
            code="upstream_unreachable",
        ) from None


def _handshake_error(status: int) -> UpstreamError:
    if status in (401, 403):
        return UpstreamError(
            f"the upstream rejected the relay's credentials (HTTP {status})",
            retryable=False,
            code="upstream_auth_failed",
            status=status,
        )
    if status == 429:
        return UpstreamError(
            "the upstream is rate limiting new sessions (HTTP 429)",
            retryable=True,
            code="upstream_rate_limited",
            status=status,
        )
    if status >= 500:
        return UpstreamError(
            f"the upstream is unavailable (HTTP {status})",
            retryable=True,
            code="upstream_unavailable",
            status=status,
        )
    return UpstreamError(
        f"the upstream refused the session (HTTP {status})",
        retryable=False,
        code="upstream_refused",
        status=status,
    )


def close_error(code: int | None, last_error_code: str | None) -> UpstreamError:
    """What an upstream close after a successful handshake means for the client."""
    if code == 3000 or last_error_code in ("invalid_api_key", "insufficient_quota"):
        return UpstreamError(
            "the upstream rejected the relay's credentials or quota",
            retryable=False,
            code="upstream_auth_failed",
        )
    if code == 4000:
        return UpstreamError(
            f"the upstream refused the session request ({last_error_code or 'invalid request'})",
            retryable=False,
            code="upstream_refused",
        )
    return UpstreamError(
        f"the upstream connection closed unexpectedly (code {code})",
        retryable=True,
        code="upstream_closed",
    )
