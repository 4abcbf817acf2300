"""Client credentials: identities that are never ambiguous, tokens checked strictly, failures
limited per peer."""

from __future__ import annotations

import hashlib
import time

import jwt

from relay.core.credentials import Authenticator, AuthError, FailureLimiter, Identity
from relay.settings import Settings


def test_a_jwt_subject_cannot_pose_as_a_static_token() -> None:
    digest = hashlib.sha256(b"app-token-0123456789").hexdigest()[:12]
    authenticator = Authenticator(Settings(client_tokens=["app-token-0123456789"]))
    token = authenticator.authenticate("app-token-0123456789")
    assert token.kind == "token"
    forged = Identity(f"token:{digest}")
    assert forged.key != token.key


def test_separators_inside_claims_do_not_merge_identities() -> None:
    assert Identity("b/c", tenant="a").key != Identity("c", tenant="a/b").key
    assert Identity("x", tenant="").key != Identity("x").key
    assert Identity("anonymous", kind="anonymous").key != Identity("anonymous").key


def test_log_level_is_accepted_in_any_case() -> None:
    assert Settings(log_level="debug").log_level == "DEBUG"  # type: ignore[arg-type]
    assert Settings(log_level="Warning").log_level == "WARNING"  # type: ignore[arg-type]


SECRET = "s" * 32


def _jwt(**claims: object) -> str:
    return jwt.encode({"sub": "user-1", **claims}, SECRET, algorithm="HS256")


def _reason(authenticator: Authenticator, token: str) -> str | None:
    try:
        authenticator.authenticate(token)
    except AuthError as exc:
        return exc.reason
    return None


def test_jwt_times_must_be_numbers_and_lifetimes_bounded() -> None:
    authenticator = Authenticator(Settings(jwt_secret=SECRET, jwt_max_lifetime_s=86400))
    now = int(time.time())
    assert _reason(authenticator, _jwt(exp=now + 3600)) is None
    assert _reason(authenticator, _jwt(exp=now + 86000, iat=now - 300)) is None
    assert _reason(authenticator, _jwt(exp=now + 10 * 365 * 86400)) == "token_lifetime_too_long"
    assert _reason(authenticator, _jwt(exp=now + 3600, iat=now - 86400)) == "token_lifetime_too_long"
    assert _reason(authenticator, _jwt(exp=str(now + 3600))) == "invalid_token"
    assert _reason(authenticator, _jwt(exp=now + 3600, iat=str(now))) == "invalid_token"
    assert _reason(authenticator, _jwt(exp=now + 3600, nbf=[now])) == "invalid_token"
    assert _reason(authenticator, _jwt(exp=float("inf"))) == "invalid_token"
    assert _reason(authenticator, _jwt(exp=True)) == "token_expired"
    assert _reason(authenticator, _jwt(iat=now)) == "invalid_token"  # exp is required


def test_credentials_that_are_not_utf8_are_refused_not_raised() -> None:
    """aiohttp hands invalid UTF-8 header bytes over as lone surrogates."""
    static = Authenticator(Settings(client_tokens=["app-token-0123456789"]))
    assert _reason(static, b"\xff\xfe".decode("utf-8", "surrogateescape")) == "malformed_credentials"
    signed = Authenticator(Settings(jwt_secret=SECRET))
    assert _reason(signed, "a.b.\udcff") == "malformed_credentials"


def test_empty_secrets_are_unset() -> None:
    """``RELAY_JWT_SECRET=`` must not turn on HS256 with an empty key anyone can sign with."""
    settings = Settings(jwt_secret="", openai_api_key=" ", azure_openai_api_key="", azure_openai_endpoint="")
    assert settings.jwt_secret is None
    assert not settings.auth_configured
    assert settings.upstream_kind == "simulator"


def test_failed_authentications_are_limited_per_peer() -> None:
    limiter = FailureLimiter(rate_per_s=20, burst=50, max_peers=3)
    for _ in range(50):
        assert not limiter.blocked("a", now=100.0)
        limiter.failed("a", now=100.0)
    assert limiter.blocked("a", now=100.0)
    assert not limiter.blocked("b", now=100.0)
    assert limiter.blocked("a", now=100.04)
    assert not limiter.blocked("a", now=100.051)  # one more attempt per 50 ms
    limiter.failed("a", now=100.051)
    assert limiter.blocked("a", now=100.051)
    assert not limiter.blocked("a", now=102.55)  # a full bucket again
    for peer in ("b", "c", "d"):
        limiter.failed(peer, now=101.0)
    assert not limiter.blocked("a", now=101.0)  # forgotten: memory stays bounded
    off = FailureLimiter(rate_per_s=0, burst=1)
    for _ in range(100):
        off.failed("a")
    assert not off.blocked("a")
