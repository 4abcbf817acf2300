"""Keepalive: the relay pings both peers and drops one that stops answering."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import RelayFactory
from tests.support.scripted_upstream import ScriptedUpstream


async def test_a_silent_client_is_detected_and_closed(start_relay: RelayFactory) -> None:
    upstream = await ScriptedUpstream().start()
    relay = await start_relay(upstream="simulator", upstream_url=upstream.url, ping_interval_s=0.4)
    async with aiohttp.ClientSession() as http:
        # autoping=False: this client never answers the relay's pings, like a dead peer.
        ws = await http.ws_connect(relay.ws_url, headers=relay.auth, autoping=False)
        closed = False
        async with asyncio.timeout(5):
            async for msg in ws:
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
            closed = True
        assert closed
    for _ in range(50):
        if relay.metric("relay_sessions_active") == 0:
            break
        await asyncio.sleep(0.1)
    assert relay.metric("relay_sessions_active") == 0
    await upstream.close()
