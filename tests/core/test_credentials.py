"""Client identities: what per-identity caps and logs key on must never be ambiguous."""

from __future__ import annotations

import hashlib

from relay.core.credentials import Authenticator, Identity
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
