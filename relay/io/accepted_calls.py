"""The calls accepted through this relay, with the G.711 formats each was accepted with, for
their control sockets (``?call_id=``) to pin."""

from __future__ import annotations

from collections import OrderedDict

from aiohttp import web

from relay.core.calls import CallFormats

_KEPT_CALLS = 10_000


class AcceptedCalls:
    """The G.711 formats of calls accepted through this relay, for their control sockets; the
    most recently accepted ``limit`` are kept (calls last minutes, so that is hours of calls)."""

    def __init__(self, limit: int = _KEPT_CALLS) -> None:
        self.limit = limit
        self._calls: OrderedDict[str, CallFormats] = OrderedDict()

    def add(self, call_id: str, formats: CallFormats) -> None:
        self._calls[call_id] = formats
        self._calls.move_to_end(call_id)
        while len(self._calls) > self.limit:
            self._calls.popitem(last=False)

    def get(self, call_id: str) -> CallFormats | None:
        return self._calls.get(call_id)

    def forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)


ACCEPTED_CALLS: web.AppKey[AcceptedCalls] = web.AppKey("accepted_calls", AcceptedCalls)


def accepted_call_formats(app: web.Application, call_id: str) -> CallFormats | None:
    """The formats a call was accepted with through this relay (None: not through this one)."""
    calls = app.get(ACCEPTED_CALLS)
    return calls.get(call_id) if calls is not None else None
