"""Microsoft Entra ID bearer tokens for Azure OpenAI, refreshed before they expire.

azure-identity is an optional extra (``pip install relay[azure]``): only deployments that use
Entra ID instead of an api-key need it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from relay.core.errors import UpstreamError

SCOPE = "https://cognitiveservices.azure.com/.default"
REFRESH_MARGIN_S = 300.0  # renew five minutes before expiry so no handshake uses a stale token


class EntraTokenProvider:
    """Caches one token and renews it ahead of its expiry; safe to call from many sessions."""

    def __init__(self, credential: Any | None = None) -> None:
        self._credential = credential
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token and time.time() < self._expires_on - REFRESH_MARGIN_S:
            return self._token
        async with self._lock:
            if not self._token or time.time() >= self._expires_on - REFRESH_MARGIN_S:
                access = await self._get_credential().get_token(SCOPE)
                self._token, self._expires_on = access.token, float(access.expires_on)
        return self._token

    def _get_credential(self) -> Any:
        if self._credential is None:
            try:
                from azure.identity.aio import DefaultAzureCredential
            except ImportError:
                raise UpstreamError(
                    "Entra ID needs the azure extra: pip install 'relay[azure]'", retryable=False
                ) from None
            self._credential = DefaultAzureCredential()
        return self._credential
