"""The client endpoint, ``GET /v1/realtime?model=...``: admission checks, then the upgrade.

Every refusal happens before the WebSocket upgrade, as a plain HTTP response with a JSON body
naming the reason: 401 (credentials), 403 (origin or model), 429 (capacity), 503 (draining).
A refused client never holds a socket open and never reaches the upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web

from relay.core.beta_translator import BetaTranslator
from relay.core.credentials import AuthError, Identity, token_from_request
from relay.core.errors import error_event, new_id
from relay.core.models import ModelNotAllowed, resolve_model
from relay.core.protocol import (
    BETA_DISABLED_MESSAGE,
    BETA_HEADER_VALUE,
    BETA_SUBPROTOCOL,
    REALTIME_SUBPROTOCOL,
    Interface,
)
from relay.io.context import CapacityExceeded, RelayContext
from relay.io.frames import dumps
from relay.io.session import RelaySession
from relay.io.websocket import WebSocketConnection, accept
from relay.observability.logging import get_logger

RELAY_CONTEXT: web.AppKey[RelayContext] = web.AppKey("relay_context", RelayContext)
SESSION_HEADER = "X-Relay-Session-Id"

_log = get_logger()


@dataclass(frozen=True, slots=True)
class Admission:
    identity: Identity
    model: str
    beta_client: bool


class Rejection(Exception):
    """An upgrade refused at the HTTP level; ``reason`` is a bounded metric label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    def response(self) -> web.Response:
        body = {"error": {"type": "relay_rejection", "code": self.reason, "message": self.message}}
        return web.json_response(body, status=self.status)


def _subprotocols(request: web.Request) -> list[str]:
    raw = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def is_beta_client(request: web.Request, subprotocols: list[str]) -> bool:
    return (
        request.headers.get("OpenAI-Beta", "").strip() == BETA_HEADER_VALUE
        or BETA_SUBPROTOCOL in subprotocols
    )


def admit(ctx: RelayContext, request: web.Request) -> Admission:
    """Decide at the HTTP level whether this upgrade may proceed; raises :class:`Rejection`."""
    settings = ctx.settings
    if ctx.draining:
        raise Rejection(503, "draining", "the relay is shutting down; reconnect to another instance")
    origin = request.headers.get(hdrs.ORIGIN)
    if settings.allowed_origins and origin is not None and origin not in settings.allowed_origins:
        raise Rejection(403, "origin_not_allowed", f"origin {origin!r} is not allowed")
    subprotocols = _subprotocols(request)
    token = token_from_request(request.headers.get(hdrs.AUTHORIZATION), subprotocols)
    try:
        identity = ctx.authenticator.authenticate(token)
    except AuthError as exc:
        raise Rejection(401, exc.reason, exc.message) from None
    beta = is_beta_client(request, subprotocols)
    try:
        model = resolve_model(
            request.query.get("model"),
            default=settings.default_model,
            allowed=settings.allowed_models,
            beta_map=settings.beta_model_map if beta else None,
        )
    except ModelNotAllowed as exc:
        raise Rejection(403, "model_not_allowed", str(exc)) from None
    return Admission(identity, model, beta)


async def realtime_endpoint(request: web.Request) -> web.StreamResponse:
    ctx = request.app[RELAY_CONTEXT]
    try:
        admission = admit(ctx, request)
        try:
            ctx.registry.reserve(admission.identity)
        except CapacityExceeded as exc:
            raise Rejection(429, exc.reason, exc.message) from None
    except Rejection as rejection:
        ctx.metrics.auth_rejections_total.labels(rejection.reason).inc()
        _log.info("upgrade_rejected", status=rejection.status, reason=rejection.reason)
        return rejection.response()
    session: RelaySession | None = None
    try:
        session_id = new_id("relay_")
        upgraded = await accept(
            request,
            subprotocols=(REALTIME_SUBPROTOCOL,),
            headers={SESSION_HEADER: session_id},
            max_size=ctx.settings.max_message_bytes,
            write_limits=(ctx.settings.send_high_water_bytes, ctx.settings.send_low_water_bytes),
        )
        if isinstance(upgraded, web.Response):
            return upgraded  # not a valid WebSocket upgrade: 400 / 426 before any socket is kept
        if admission.beta_client and not _translate_beta(ctx):
            await _refuse_beta(upgraded.connection)
            return upgraded.response
        session = RelaySession(
            ctx,
            upgraded.connection,
            session_id=session_id,
            identity_key=admission.identity.key,
            model=admission.model,
            beta=_translator(ctx, admission.beta_client),
        )
        ctx.registry.add(session)
        await session.run()
        return upgraded.response
    finally:
        ctx.registry.release(session, admission.identity.key)


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
