"""The floor of the relay's architecture: ``python -m bench.floor PORT UPSTREAM_URL``.

A relay that only forwards: the same aiohttp upgrade, the same WebSocket layer
(``relay.io.websocket``: frames read and written by ``relay.core.websocket``, compiled when
built), the same uvloop, and nothing else: no authentication, no checks, no tracking, no
metrics. The benchmark runs it beside the relay and nginx, so its CPU per frame splits the
relay's gap to nginx in two: what Python and this I/O design cost at the least (the floor
against nginx), and what the relay's own work per frame costs (the relay against the floor).
Benchmark use only: it holds no key and checks nothing.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web
from yarl import URL

from relay.io.websocket import Upgraded, accept, connect

NAME = "floor (forward only)"  # its row in the benchmark's report
MAX_SIZE = 24 * 1024 * 1024


def app(upstream: str) -> web.Application:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        url = URL(upstream).with_query(request.query)
        up = await connect(url, {"Authorization": "Bearer floor"}, max_size=MAX_SIZE, open_timeout_s=10)
        upgraded = await accept(
            request,
            subprotocols=("realtime",),
            headers={},
            max_size=MAX_SIZE,
            write_limits=(1024 * 1024, 256 * 1024),
        )
        if not isinstance(upgraded, Upgraded):
            up.abort()
            return upgraded
        client = upgraded.connection

        def to_upstream(opcode: int, data: bytes) -> None:
            up.send(data, opcode)

        def to_client(opcode: int, data: bytes) -> None:
            client.send(data, opcode)

        client.set_handler(to_upstream)
        up.set_handler(to_client)
        await client.closed
        up.abort()
        return upgraded.response

    application = web.Application()
    application.router.add_get("/v1/realtime", endpoint)
    return application


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # as ``relay serve`` runs
    web.run_app(app(upstream), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
