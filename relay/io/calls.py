"""The phone-call endpoints, ``POST /v1/realtime/calls/{call_id}/{accept|reject|refer|hangup}``.

The same paths, bodies and statuses as the API's; the relay adds the provider key. Clients are
admitted as at the WebSocket upgrade (``relay.io.handler.authenticate``: tokens, JWTs, origins,
the failed-auth budget). An accept is checked before it leaves (``relay.core.calls``): the schema,
hints and operator policy of a ``session.update``'s ``session``, then the call's G.711 formats
(F4: filled in where the body names none, PCM refused). A refusal is a 400 in the REST API's
error shape and the call never sees the body. Reject, refer and hangup bodies go as sent. What the
upstream answers comes back with its status and body, through ``redact_text``.

Upstream: the provider's Realtime WebSocket URL (``UpstreamConfig.target``) as HTTP(S), plus
``/calls/{call_id}/{action}``: ``https://api.openai.com/v1/realtime/calls/...``, Azure's
``/openai/v1/realtime/calls/...`` (its SIP endpoints exist only in the v1 GA form, so a preview
configuration uses them too), the simulator's from ``RELAY_UPSTREAM_URL`` or the embedded one.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
from aiohttp import hdrs, web
from yarl import URL

from relay.core.calls import (
    CallFormats,
    is_call_id,
    pin_call_formats,
    police_accept,
    rest_error,
    validate_accept,
)
from relay.core.errors import InvalidEvent, UpstreamError, new_id
from relay.core.policy import Policy
from relay.core.redaction import redact_text
from relay.core.validation import Validator
from relay.io.accepted_calls import ACCEPTED_CALLS, AcceptedCalls
from relay.io.context import RelayContext
from relay.io.frames import dumps
from relay.io.handler import RELAY_CONTEXT, Rejection, authenticate, log_rejection
from relay.observability.logging import get_logger

ROUTE = "/v1/realtime/calls/{call_id}/{action:accept|reject|refer|hangup}"
MAX_UPSTREAM_BODY = 64 * 1024  # the API answers these with an empty body or a short error
_VALIDATOR = Validator()
_BAD_CALL_ID = (
    "Invalid 'call_id': expected the id from the realtime.call.incoming webhook (letters, digits, "
    "'_' and '-')."
)
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: the relay expects a JSON object, "
    "as the API does.)"
)

_log = get_logger()


def add_call_routes(app: web.Application) -> None:
    app[ACCEPTED_CALLS] = AcceptedCalls()
    app.router.add_post(ROUTE, call_endpoint)


async def call_endpoint(request: web.Request) -> web.StreamResponse:
    ctx = request.app[RELAY_CONTEXT]
    action = request.match_info["action"]
    try:
        identity = authenticate(ctx, request)
    except Rejection as rejection:
        ctx.metrics.auth_rejections_total.labels(rejection.reason).inc()
        ctx.metrics.call_requests_total.labels(action, "unauthorized").inc()
        log_rejection(request, rejection)
        return rejection.response()
    started = time.monotonic()
    call_id = request.match_info["call_id"]
    response, result = await _serve(ctx, request, call_id, action)
    ctx.metrics.call_requests_total.labels(action, result).inc()
    _log.info(
        "call_request",
        action=action,
        call_id=call_id if is_call_id(call_id) else "invalid",
        status=response.status,
        result=result,
        client=identity.key,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )
    return response


async def _serve(
    ctx: RelayContext, request: web.Request, call_id: str, action: str
) -> tuple[web.Response, str]:
    if not is_call_id(call_id):
        return _api_error(400, InvalidEvent("invalid_value", _BAD_CALL_ID, "call_id")), "refused"
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        return _api_error(413, InvalidEvent("request_too_large", exc.text or "Request too large.")), "refused"
    formats: CallFormats | None = None
    if action == "accept":
        try:
            body, formats = _prepared_accept(ctx, body)
        except InvalidEvent as exc:
            return _api_error(400, exc), "refused"
    try:
        status, payload, content_type = await _forward(ctx, call_id, action, body, request.content_type)
    except UpstreamError as exc:
        return _server_error(502, exc.code, exc.message), "upstream_error"
    except TimeoutError:
        return _server_error(
            504, "upstream_timeout", "The upstream did not answer in time."
        ), "upstream_error"
    except (aiohttp.ClientError, OSError) as exc:
        message = f"The relay could not reach the upstream: {type(exc).__name__}."
        return _server_error(502, "upstream_unreachable", message), "upstream_error"
    _remember(request.app, call_id, action, status, formats)
    return _passthrough(status, payload, content_type), _result(status)


def _prepared_accept(ctx: RelayContext, raw: bytes) -> tuple[bytes, CallFormats]:
    """The body to forward (always the relay's own serialisation: what was checked is what the
    API reads, duplicate keys or not) and the formats the call is accepted with."""
    settings = ctx.settings
    try:
        body: Any = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise InvalidEvent(None, _BAD_JSON) from None
    if settings.validate_events or not isinstance(body, dict):
        validate_accept(body, _VALIDATOR)
    police_accept(body, Policy.from_settings(settings))
    formats = CallFormats.of(body, settings.calls_audio_format)
    if pin_call_formats(body, formats, fill=settings.calls_fill_formats, param_prefix=""):
        ctx.metrics.call_format_fills_total.labels("accept").inc()
    return dumps(body), formats


async def _forward(
    ctx: RelayContext, call_id: str, action: str, body: bytes, content_type: str
) -> tuple[int, bytes, str | None]:
    target = await ctx.upstreams.target(None, new_id("relay_"))
    headers = {name: value for name, value in target.headers.items() if name.lower() != "openai-beta"}
    headers[hdrs.ACCEPT] = "*/*"
    if body:
        headers[hdrs.CONTENT_TYPE] = "application/json" if action == "accept" else content_type
    timeout = aiohttp.ClientTimeout(total=ctx.settings.calls_timeout_s)
    url = calls_url(target.url, call_id, action)
    async with ctx.http.post(
        url, data=body or None, headers=headers, timeout=timeout, allow_redirects=False
    ) as resp:
        payload = await _bounded(resp)
        return resp.status, payload, resp.headers.get(hdrs.CONTENT_TYPE)


def calls_url(realtime_url: URL, call_id: str, action: str) -> URL:
    """``wss://host/v1/realtime?model=...`` -> ``https://host/v1/realtime/calls/{id}/{action}``."""
    scheme = {"ws": "http", "wss": "https"}.get(realtime_url.scheme, realtime_url.scheme)
    path = realtime_url.path.rstrip("/")
    if path.endswith("/openai/realtime"):  # Azure's preview form: its calls are GA (v1) only
        path = path.removesuffix("/openai/realtime") + "/openai/v1/realtime"
    base = realtime_url.with_scheme(scheme).with_query(None).with_fragment(None)
    return base.with_path(f"{path}/calls/{call_id}/{action}")


async def _bounded(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(16 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_UPSTREAM_BODY:
            break
    return b"".join(chunks)[:MAX_UPSTREAM_BODY]


def _passthrough(status: int, payload: bytes, content_type: str | None) -> web.Response:
    """The upstream's answer as it came, with anything key-shaped in it redacted."""
    text = payload.decode("utf-8", "replace")
    cleaned = redact_text(text)
    body = payload if cleaned == text else cleaned.encode()
    headers = {hdrs.CONTENT_TYPE: content_type} if content_type and body else None
    return web.Response(status=status, body=body, headers=headers)


def _remember(
    app: web.Application, call_id: str, action: str, status: int, formats: CallFormats | None
) -> None:
    calls = app[ACCEPTED_CALLS]
    if not 200 <= status < 300:
        return
    if formats is not None:
        calls.add(call_id, formats)
    else:  # rejected, transferred or hung up: no control socket will need its formats
        calls.forget(call_id)


def _result(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    return "upstream_5xx" if status >= 500 else "upstream_4xx"


def _api_error(status: int, error: InvalidEvent) -> web.Response:
    return web.json_response(rest_error(error), status=status)


def _server_error(status: int, code: str | None, message: str) -> web.Response:
    body = {"error": {"message": redact_text(message), "type": "server_error", "param": None, "code": code}}
    return web.json_response(body, status=status)
