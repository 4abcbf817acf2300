"""Client credentials: static tokens (constant-time), token hashes, and JWTs.

Browsers cannot set headers on a WebSocket, so the token may also arrive as the subprotocol
``openai-insecure-api-key.<token>`` (the same trick the OpenAI browser SDK uses). Either way the
relay checks it before the upgrade and never echoes it back.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import jwt

from relay.core.protocol import TOKEN_SUBPROTOCOL_PREFIX
from relay.settings import Settings

IdentityKind = Literal["token", "jwt", "anonymous"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the client is, for per-identity limits and logs (never the token itself).

    A static token is usually an app's shared credential, a JWT names one user: their caps
    differ (``kind``), and their keys can never collide.
    """

    subject: str
    tenant: str | None = None
    kind: IdentityKind = "jwt"

    @property
    def key(self) -> str:
        """Unambiguous: the kind first, then each part percent-encoded (a ``/`` or ``:`` inside a
        claim cannot make tenant ``a`` + sub ``b/c`` equal tenant ``a/b`` + sub ``c``)."""
        if self.kind == "anonymous":
            return "anonymous"
        if self.kind == "token":
            return f"token:{self.subject}"
        subject = quote(self.subject, safe="")
        return f"jwt:{quote(self.tenant, safe='')}/{subject}" if self.tenant is not None else f"jwt:{subject}"


class AuthError(Exception):
    """Credentials missing or invalid: HTTP 401 at the upgrade, with ``reason`` as the body."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def token_from_request(authorization: str | None, subprotocols: Iterable[str]) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for protocol in subprotocols:
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol[len(TOKEN_SUBPROTOCOL_PREFIX) :] or None
    return None


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Authenticator:
    """Verifies a client token against the configured static tokens, hashes and JWT keys."""

    def __init__(self, settings: Settings) -> None:
        self._tokens = [t.get_secret_value().encode() for t in settings.client_tokens]
        self._hashes = [h.lower() for h in settings.client_token_hashes]
        self._jwt_secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._jwt_public_key = _load_key(settings.jwt_public_key)
        self._audience = settings.jwt_audience
        self._max_lifetime_s = settings.jwt_max_lifetime_s
        self._issuer = settings.jwt_issuer
        self._identity_claim = settings.jwt_identity_claim
        self._tenant_claim = settings.jwt_tenant_claim
        self.required = settings.auth_configured

    def authenticate(self, token: str | None) -> Identity:
        if not self.required:
            return Identity("anonymous", kind="anonymous")
        if not token:
            raise AuthError("missing_credentials", "missing client credentials")
        if not _is_utf8(token):
            raise AuthError("malformed_credentials", "the client credentials are not valid UTF-8")
        if self._static_match(token):
            return Identity(_sha256(token)[:12], kind="token")
        if token.count(".") == 2 and (self._jwt_secret or self._jwt_public_key):
            return self._verify_jwt(token)
        raise AuthError("invalid_token", "invalid client token")

    def _static_match(self, token: str) -> bool:
        encoded = token.encode()
        # Compare against every entry so the time taken does not reveal which one matched.
        matched = False
        for known in self._tokens:
            matched |= hmac.compare_digest(known, encoded)
        digest = _sha256(token)
        for known_hash in self._hashes:
            matched |= hmac.compare_digest(known_hash, digest)
        return matched

    def _verify_jwt(self, token: str) -> Identity:
        try:
            key, algorithms = self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the client token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token_not_yet_valid", "the client token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthError("invalid_audience", "the client token has the wrong audience") from None
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "invalid client token") from None
        self._check_times(claims)
        subject = claims.get(self._identity_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthError("invalid_token", f"the client token has no {self._identity_claim!r}")
        tenant = claims.get(self._tenant_claim)
        return Identity(subject, tenant if isinstance(tenant, str) else None)

    def _check_times(self, claims: dict[str, Any]) -> None:
        """PyJWT takes ``"exp": "1893456000"`` (it calls ``int()``) and any lifetime: the times
        must be numbers, and a token may live at most ``jwt_max_lifetime_s`` from its issue (or
        from now, without ``iat``), so a leaked long-lived token is not good for years."""
        for name in ("exp", "iat", "nbf"):
            if name in claims and not _is_time(claims[name]):
                raise AuthError("invalid_token", f"the client token's {name!r} is not a number")
        issued = claims.get("iat", time.time())
        if claims["exp"] - issued > self._max_lifetime_s:
            raise AuthError(
                "token_lifetime_too_long",
                f"the client token lives longer than {self._max_lifetime_s:g} s (RELAY_JWT_MAX_LIFETIME_S)",
            )

    def _key_for(self, token: str) -> tuple[str, list[str]]:
        """The key for the token's algorithm: HS256 uses the secret, RS256/ES256 the public key."""
        algorithm = jwt.get_unverified_header(token).get("alg")
        key = self._jwt_secret if algorithm == "HS256" else self._jwt_public_key
        if key is None:
            raise jwt.InvalidAlgorithmError(f"no key configured for {algorithm}")
        return key, ["HS256"] if algorithm == "HS256" else ["RS256", "ES256"]


def _is_utf8(token: str) -> bool:
    # aiohttp decodes header bytes with surrogateescape: invalid UTF-8 arrives as lone surrogates.
    try:
        token.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class FailureLimiter:
    """Failed authentications per peer, as a token bucket: ``burst`` at once, then ``rate_per_s``.

    A peer whose bucket is empty is refused before its credentials are even read, so guessing
    runs at ``rate_per_s`` at most. ``rate_per_s`` 0 turns the limit off. Memory is bounded: the
    peers that failed least recently are forgotten first (their buckets have refilled).
    """

    def __init__(self, rate_per_s: float, burst: int, max_peers: int = 10_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_peers = max_peers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def blocked(self, peer: str, now: float | None = None) -> bool:
        return self.rate_per_s > 0 and self._tokens(peer, now) < 1

    def failed(self, peer: str, now: float | None = None) -> None:
        if self.rate_per_s <= 0:
            return
        now = time.monotonic() if now is None else now
        self._buckets[peer] = (max(self._tokens(peer, now) - 1, 0.0), now)
        self._buckets.move_to_end(peer)
        while len(self._buckets) > self._max_peers:
            self._buckets.popitem(last=False)

    def _tokens(self, peer: str, now: float | None) -> float:
        entry = self._buckets.get(peer)
        if entry is None:
            return float(self.burst)
        tokens, when = entry
        now = time.monotonic() if now is None else now
        return min(float(self.burst), tokens + (now - when) * self.rate_per_s)


def _load_key(value: str | None) -> str | None:
    if not value:
        return None
    if "-----BEGIN" in value:
        return value
    return Path(value).read_text()
