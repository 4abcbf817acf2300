"""The client endpoint, ``GET /v1/realtime?model=...``: admission checks, then the upgrade.

Every refusal happens before the WebSocket upgrade, as a plain HTTP response with a JSON body
naming the reason: 401 (credentials), 403 (origin or model), 429 (capacity, or a peer over its
budget of failed authentications: then the connection closes too), 503 (draining). A refused
client never holds a socket open and never reaches the upstream; a flood of refusals costs a
log line per peer and reason every few seconds, not one per attempt.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from relay.core.beta_translator import BetaTranslator
from relay.core.calls import CallFormats, is_call_id
from relay.core.client_address import TrustedProxies
from relay.core.credentials import AuthError, FailureLimiter, Identity, token_from_request
from relay.core.errors import error_event, new_id
from relay.core.models import ModelNotAllowed, resolve_model
from relay.core.protocol import (
    BETA_DISABLED_MESSAGE,
    BETA_HEADER_VALUE,
    BETA_SUBPROTOCOL,
    REALTIME_SUBPROTOCOL,
    Interface,
)
from relay.core.resume import ResumeCredential, split_token
from relay.core.snapshot import Snapshot, SnapshotInvalid
from relay.io.accepted_calls import accepted_call_formats
from relay.io.budgets import BUDGETS, Budgets, BudgetsUnavailable, SessionUsage
from relay.io.context import CapacityExceeded, RelayContext
from relay.io.conversation import Conversation
from relay.io.frames import dumps
from relay.io.guard import LogThrottle, peer_key
from relay.io.redis_client import StoreUnavailable
from relay.io.session_store import Pending, SessionStore, StoreBusy
from relay.io.websocket import WebSocketConnection, accept
from relay.observability.logging import get_logger

RELAY_CONTEXT: web.AppKey[RelayContext] = web.AppKey("relay_context", RelayContext)
AUTH_FAILURES: web.AppKey[FailureLimiter] = web.AppKey("auth_failures", FailureLimiter)
REJECTION_LOG: web.AppKey[LogThrottle] = web.AppKey("rejection_log", LogThrottle)
TRUSTED_PROXIES: web.AppKey[TrustedProxies] = web.AppKey("trusted_proxies", TrustedProxies)
SESSION_HEADER = "X-Relay-Session-Id"
RESUME_TOKEN_HEADER = "X-Relay-Resume-Token"
RESUME_SUBPROTOCOL_PREFIX = "relay-resume."
LAST_EVENT_HEADER = "X-Relay-Last-Event-Id"
RESUME_HEADER = "X-Relay-Resume"
INTENTS = ("realtime", "transcription")

_log = get_logger()


@dataclass(frozen=True, slots=True)
class Admission:
    identity: Identity
    model: str | None  # None: a transcription session (no model, as the API takes it)
    beta_client: bool
    intent: str = "realtime"
    call_id: str | None = None  # ?call_id=: the control socket of a phone call


class Rejection(Exception):
    """An upgrade refused at the HTTP level; ``reason`` is a bounded metric label."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        retry_after_s: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s
        self.details = details  # more fields of the error body, e.g. the budget exceeded

    def response(self) -> web.Response:
        error: dict[str, Any] = {"type": "relay_rejection", "code": self.reason, "message": self.message}
        body = {"error": error | self.details if self.details else error}
        response = web.json_response(body, status=self.status)
        if self.retry_after_s is not None:
            # A flood on one keep-alive connection ends here: the next attempt needs a new one.
            response.headers[hdrs.RETRY_AFTER] = str(self.retry_after_s)
            response.force_close()
        return response


def client_peer(request: web.Request) -> str:
    """The unit a client is limited and logged by: its address (``relay.core.client_address``,
    behind the operator's trusted proxies), as ``peer_key`` groups addresses."""
    proxies = request.app[TRUSTED_PROXIES]
    return peer_key(proxies.client_address(request.remote, request.headers.getall(hdrs.X_FORWARDED_FOR, ())))


def log_rejection(request: web.Request, rejection: Rejection) -> None:
    """One line per peer and reason every few seconds, with how many were not logged."""
    peer = client_peer(request)
    suppressed = request.app[REJECTION_LOG].allow(f"{rejection.reason} {peer}")
    if suppressed is not None:
        _log.info(
            "upgrade_rejected" if request.path == "/v1/realtime" else "request_rejected",
            status=rejection.status,
            reason=rejection.reason,
            peer=peer,
            suppressed=suppressed,
        )


def _subprotocols(request: web.Request) -> list[str]:
    raw = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def is_beta_client(request: web.Request, subprotocols: list[str]) -> bool:
    return (
        request.headers.get("OpenAI-Beta", "").strip() == BETA_HEADER_VALUE
        or BETA_SUBPROTOCOL in subprotocols
    )


def authenticate(ctx: RelayContext, request: web.Request) -> Identity:
    """Who the client is, or the refusal: origin, the failed-auth budget, credentials. The
    upgrade and the phone-call endpoints (``relay.io.calls``) admit alike."""
    settings = ctx.settings
    origin = request.headers.get(hdrs.ORIGIN)
    if settings.allowed_origins and origin is not None and origin not in settings.allowed_origins:
        raise Rejection(403, "origin_not_allowed", f"origin {origin!r} is not allowed")
    failures = request.app[AUTH_FAILURES]
    peer = client_peer(request)
    if failures.blocked(peer):  # before the credentials are read: guessing is slowed too
        raise Rejection(
            429,
            "auth_rate_limited",
            "too many failed authentications from this address; retry later",
            retry_after_s=math.ceil(1 / failures.rate_per_s),
        )
    token = token_from_request(request.headers.get(hdrs.AUTHORIZATION), _subprotocols(request))
    try:
        return ctx.authenticator.authenticate(token)
    except AuthError as exc:
        failures.failed(peer)
        raise Rejection(401, exc.reason, exc.message) from None


def admit(ctx: RelayContext, request: web.Request) -> Admission:
    """Decide at the HTTP level whether this upgrade may proceed; raises :class:`Rejection`."""
    settings = ctx.settings
    if ctx.draining:
        raise Rejection(503, "draining", "the relay is shutting down; reconnect to another instance")
    identity = authenticate(ctx, request)
    beta = is_beta_client(request, _subprotocols(request))
    intent = request.query.get("intent") or "realtime"
    if intent not in INTENTS:
        raise Rejection(
            400, "invalid_intent", f"intent must be 'realtime' or 'transcription', not {intent!r}"
        )
    # The API's forms: ?model= (realtime), ?intent=transcription without a model, and Azure's
    # ?deployment=..., which names a deployment where OpenAI names a model.
    requested = request.query.get("model") or request.query.get("deployment")
    if "call_id" in request.query:
        return _call_admission(ctx, request.query["call_id"], Admission(identity, requested, beta, intent))
    if intent == "transcription":
        return Admission(identity, requested, beta, intent)  # its models are in session.update
    try:
        model = resolve_model(
            requested,
            default=settings.default_model,
            allowed=settings.allowed_models,
            beta_map=settings.beta_model_map if beta else None,
        )
    except ModelNotAllowed as exc:
        raise Rejection(403, "model_not_allowed", str(exc)) from None
    return Admission(identity, model, beta, intent)


async def within_budget(request: web.Request, identity: Identity) -> None:
    """A client over a budget gets no new session: 429 naming the limit, its period and when it
    resets (``Retry-After``). One in-process lookup, or one Redis round trip; none without budgets."""
    budgets = request.app[BUDGETS]
    if not budgets.enabled:
        return
    now = time.time()
    try:
        exceeded = await budgets.over(budgets.keys_for(identity), now)
    except BudgetsUnavailable:
        budgets.refused(None, "upgrade")
        raise Rejection(
            503,
            "budget_unavailable",
            "the relay cannot check this client's budget right now; retry shortly",
            retry_after_s=5,
        ) from None
    if exceeded is not None:
        budgets.refused(exceeded, "upgrade")
        raise Rejection(
            429,
            "budget_exceeded",
            exceeded.message(),
            retry_after_s=exceeded.retry_after_s(now),
            details={"budget": exceeded.as_json(now)},
        )


async def realtime_endpoint(request: web.Request) -> web.StreamResponse:
    ctx = request.app[RELAY_CONTEXT]
    resume = ResumeRequest.of(request)
    moved_in = False  # taken over from another process: started here like a new one
    try:
        admission = admit(ctx, request)
        if resume.token is not None:
            conversation, moved_in = await _resumable(ctx, request, resume.token, admission)
        else:
            if not ctx.overload.admits(len(ctx.registry.sessions)):  # those here keep their latency
                raise Rejection(
                    503,
                    "overloaded",
                    f"the relay is overloaded ({ctx.overload.reason}); retry shortly, or on another replica",
                    retry_after_s=ctx.overload.retry_after_s(),
                )
            await within_budget(request, admission.identity)
            try:
                await ctx.registry.admit(admission.identity)
            except CapacityExceeded as exc:
                raise Rejection(429, exc.reason, exc.message) from None
            conversation = _conversation(
                ctx, admission, request.app[BUDGETS], _call_formats(request, admission)
            )
    except Rejection as rejection:
        ctx.metrics.auth_rejections_total.labels(rejection.reason).inc()
        log_rejection(request, rejection)
        return rejection.response()
    started = resume.token is not None and not moved_in  # a resumed conversation is already running
    try:
        token, digest = conversation.credential.prepare()
        headers = {SESSION_HEADER: conversation.id}
        if conversation.resumable:
            headers[RESUME_TOKEN_HEADER] = token
        upgraded = await accept(
            request,
            subprotocols=(REALTIME_SUBPROTOCOL,),
            headers=headers,
            max_size=ctx.settings.max_message_bytes,
            write_limits=(ctx.settings.send_high_water_bytes, ctx.settings.send_low_water_bytes),
        )
        if isinstance(upgraded, web.Response):
            return upgraded  # not a valid WebSocket upgrade: 400 / 426 before any socket is kept
        if admission.beta_client and not _translate_beta(ctx):
            await _refuse_beta(upgraded.connection)
            return upgraded.response
        if started and conversation.ended:  # it ended while this resume was being upgraded
            await upgraded.connection.close(1000, b"the session has ended")
            return upgraded.response
        conversation.credential.adopt(digest)
        conversation.attach_client(upgraded.connection, last_event_id=resume.last_event_id)
        if resume.notify and conversation.resumable:
            conversation.notify_resume(token)
        if not started:
            ctx.registry.start(conversation)
            started = True
        # The conversation goes on without this connection (a resume attaches the next one).
        await upgraded.connection.closed
        return upgraded.response
    finally:
        if not started:
            ctx.registry.release(admission.identity.key)
            if moved_in and ctx.store is not None:  # let another attempt take it over at once
                await ctx.store.park(conversation.id, conversation.store_fence, Pending())


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """What a returning client brings: its resume token (a header, or for browsers the
    subprotocol ``relay-resume.<token>``), the last event it processed, and whether it wants the
    opt-in ``relay.session_resumable`` event (``?relay_resume=1``, or the header)."""

    token: str | None
    last_event_id: str | None
    notify: bool

    @classmethod
    def of(cls, request: web.Request) -> ResumeRequest:
        token = request.headers.get(RESUME_TOKEN_HEADER)
        for protocol in _subprotocols(request):
            if protocol.startswith(RESUME_SUBPROTOCOL_PREFIX):
                token = protocol[len(RESUME_SUBPROTOCOL_PREFIX) :]
        last = request.query.get("last_event_id") or request.headers.get(LAST_EVENT_HEADER)
        wants = request.query.get("relay_resume") or request.headers.get(RESUME_HEADER) or ""
        return cls(token or None, last or None, wants.strip().lower() in ("1", "true", "yes"))


async def _resumable(
    ctx: RelayContext, request: web.Request, token: str, admission: Admission
) -> tuple[Conversation, bool]:
    """The conversation a resume token names, and whether it was taken over from another process;
    or the refusal: 401 for a token that does not open it, 403 for another identity's, 410 for a
    conversation that is gone, 503 when the shared store cannot be asked."""
    parts = split_token(token)
    if parts is None:
        raise Rejection(401, "invalid_resume_token", "the resume token is malformed")
    found = ctx.registry.get(parts[0])
    if isinstance(found, Conversation) and not found.ended:
        _check_credential(ctx, found.credential, parts[1], admission.identity.key)
        return found, False
    if ctx.store is None:
        ctx.metrics.resumes_total.labels("gone").inc()
        raise Rejection(410, "session_gone", "the session to resume has ended (or its grace expired)")
    return await _take_over(ctx, request, ctx.store, parts, admission), True


def _check_credential(
    ctx: RelayContext, credential: ResumeCredential, secret: str, identity_key: str
) -> None:
    refusal = credential.check(secret, identity_key)
    if refusal is not None:
        ctx.metrics.resumes_total.labels(refusal).inc()
        if refusal == "wrong_identity":
            raise Rejection(403, "resume_identity_mismatch", "the session belongs to another client")
        raise Rejection(401, "invalid_resume_token", "the resume token is not valid for this session")


_GONE = "the session to resume has ended (or its grace expired)"
_STORE_DOWN = "the relay cannot reach its shared session store to resume this session; retry shortly"


async def _take_over(
    ctx: RelayContext, request: web.Request, store: SessionStore, parts: tuple[str, str], admission: Admission
) -> Conversation:
    """A conversation held by another process (or left by one that ended): checked against the
    stored credential, its owner asked to let go (or its lapsed lease taken), restored here."""
    session_id, secret = parts
    try:
        data, _ = await store.load(session_id)
        snapshot = Snapshot.decode(data) if data is not None else None
    except StoreUnavailable:
        raise Rejection(503, "session_store_unavailable", _STORE_DOWN, retry_after_s=1) from None
    except SnapshotInvalid as exc:
        _log.warning("snapshot_invalid", relay_session=session_id, detail=str(exc))
        snapshot = None
    if snapshot is None:
        ctx.metrics.resumes_total.labels("gone").inc()
        raise Rejection(410, "session_gone", _GONE)
    credential = ResumeCredential(session_id, snapshot.identity_key, snapshot.digest)
    _check_credential(ctx, credential, secret, admission.identity.key)
    try:
        await ctx.registry.admit(admission.identity, replacing=True)
    except CapacityExceeded as exc:
        raise Rejection(429, exc.reason, exc.message) from None
    try:
        fence = await store.acquire(session_id, wait_s=ctx.settings.session_lease_s + 1)
        if fence is None:
            raise Rejection(410, "session_gone", _GONE)
        # What the owner wrote as it let go is the state to carry on from.
        data, frames = await store.load(session_id)
        snapshot = Snapshot.decode(data) if data is not None else None
        if snapshot is None:
            raise Rejection(410, "session_gone", _GONE)
    except StoreBusy:
        ctx.registry.release(admission.identity.key)
        raise Rejection(
            503, "session_busy", "the session's relay process did not let it go; retry", retry_after_s=1
        ) from None
    except (StoreUnavailable, SnapshotInvalid):
        ctx.registry.release(admission.identity.key)
        raise Rejection(503, "session_store_unavailable", _STORE_DOWN, retry_after_s=1) from None
    except Rejection:
        ctx.registry.release(admission.identity.key)
        ctx.metrics.resumes_total.labels("gone").inc()
        raise
    ctx.metrics.sessions_moved_total.labels("arrived").inc()
    call = None
    if snapshot.call_id is not None:
        default = ctx.settings.calls_audio_format
        call = accepted_call_formats(request.app, snapshot.call_id) or CallFormats(default, default)
    return Conversation.restored(
        ctx,
        snapshot,
        frames,
        fence,
        beta=_translator(ctx, snapshot.beta),
        usage=SessionUsage(request.app[BUDGETS], admission.identity, snapshot.model),
        call=call,
    )


def _call_formats(request: web.Request, admission: Admission) -> CallFormats | None:
    """A call's formats: as accepted through this relay, else the configured G.711 default (a
    call accepted elsewhere, or before a restart)."""
    if admission.call_id is None:
        return None
    default = request.app[RELAY_CONTEXT].settings.calls_audio_format
    return accepted_call_formats(request.app, admission.call_id) or CallFormats(default, default)


def _conversation(
    ctx: RelayContext, admission: Admission, budgets: Budgets, call: CallFormats | None
) -> Conversation:
    return Conversation(
        ctx,
        session_id=new_id("relay_"),
        identity_key=admission.identity.key,
        model=admission.model,
        intent=admission.intent,
        beta=_translator(ctx, admission.beta_client),
        usage=SessionUsage(budgets, admission.identity, admission.model),
        call=call,
        call_id=admission.call_id,
    )


def _call_admission(ctx: RelayContext, call_id: str, asked: Admission) -> Admission:
    """``?call_id=``: the control socket of a phone call. As on the API, exactly one of
    ``model``, ``call_id`` and ``intent=transcription``: a call's model and session type were
    chosen when it was accepted."""
    if asked.model or asked.intent == "transcription":
        raise Rejection(
            400,
            "call_id_conflict",
            "give one of ?model=, ?call_id= and ?intent=transcription: a call's model and session "
            "were chosen when it was accepted",
        )
    if not ctx.settings.calls_enabled:
        raise Rejection(
            403, "calls_disabled", "phone calls are switched off on this relay (RELAY_CALLS_ENABLED)"
        )
    if not is_call_id(call_id):
        raise Rejection(
            400, "invalid_call_id", "call_id must be 1-128 letters, digits, '_' or '-', as the API's are"
        )
    return Admission(asked.identity, None, asked.beta_client, "realtime", call_id)


def _translate_beta(ctx: RelayContext) -> bool:
    """Beta clients are translated unless the operator chose to refuse them like the API does."""
    return ctx.settings.beta_clients == "translate" or ctx.upstreams.interface is Interface.BETA


def _translator(ctx: RelayContext, beta_client: bool) -> BetaTranslator | None:
    # An Azure preview upstream still speaks beta: its beta clients pass through untranslated.
    if not beta_client or ctx.upstreams.interface is Interface.BETA:
        return None
    return BetaTranslator(model_map=ctx.settings.beta_model_map)


async def _refuse_beta(conn: WebSocketConnection) -> None:
    """The API's own answer to a beta client (reference §0): error event, then close 4000."""
    conn.send(dumps(error_event("beta_api_shape_disabled", BETA_DISABLED_MESSAGE)))
    await conn.close(4000, b"invalid_request_error.beta_api_shape_disabled")


# ---------------------------------------------------------------------- unauthenticated relay
def cross_site_refusal(request: web.Request) -> Rejection | None:
    """Without client authentication the relay answers only its own pages and native clients.

    Any web page the developer visits could otherwise open ws://127.0.0.1:8080/v1/realtime and
    spend the provider key, or read /metrics through DNS rebinding. Browsers always send the
    Host they resolved and, cross-origin, an Origin: only a loopback Host is served, and an
    Origin only when it is the relay's own (http or https://<Host>).
    """
    host = request.headers.get(hdrs.HOST, "")
    if not _is_loopback_host(host):
        return Rejection(
            403,
            "host_not_allowed",
            "without client authentication the relay answers only to a loopback Host "
            "(localhost, 127.0.0.1, [::1]); set RELAY_CLIENT_TOKENS to serve other names",
        )
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
        return Rejection(
            403,
            "cross_site_origin",
            "without client authentication the relay answers only its own pages and native "
            "clients (no Origin); set RELAY_CLIENT_TOKENS to serve other origins",
        )
    return None


def _is_loopback_host(host: str) -> bool:
    """``localhost``, a loopback address, or ``[::1]``, each with or without a port."""
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket or (port and not (port[:1] == ":" and _is_port(port[1:]))):
            return False
    else:
        name, colon, port = host.partition(":")
        if colon and not _is_port(port):
            return False
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit()
