"""A small client for the simulator's inspection and fault-injection HTTP API."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


class SimControl:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base_url + path, json=body) as resp,
        ):
            resp.raise_for_status()
            return await resp.json()

    async def sessions(self, relay_session: str | None = None) -> list[dict[str, Any]]:
        query = f"?relay_session={relay_session}" if relay_session else ""
        body = await self._request("GET", "/_sim/sessions" + query)
        return list(body["sessions"])

    async def session(self, session_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"/_sim/sessions/{session_id}"))

    async def open_session(self, relay_session: str, timeout: float = 10) -> dict[str, Any]:
        """The newest open simulator session serving ``relay_session`` (waits for one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            open_ones = [s for s in await self.sessions(relay_session) if s["open"]]
            if open_ones:
                return await self.session(open_ones[-1]["id"])
            if loop.time() > deadline:
                raise AssertionError(f"no open simulator session for {relay_session}")
            await asyncio.sleep(0.05)

    async def replacement(
        self, relay_session: str, old_id: str, item_id: str, timeout: float = 10
    ) -> dict[str, Any]:
        """The open session that replaced ``old_id`` once its replay has reached ``item_id``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            session = await self.open_session(relay_session, timeout)
            if session["id"] != old_id and any(i["id"] == item_id for i in session["conversation"]):
                return session
            if loop.time() > deadline:
                raise AssertionError(f"no replacement of {old_id} holding {item_id}")
            await asyncio.sleep(0.05)

    async def fault(self, session_id: str, **fault: Any) -> None:
        await self._request("POST", f"/_sim/sessions/{session_id}/fault", fault)

    async def global_fault(self, **fault: Any) -> None:
        await self._request("POST", "/_sim/faults", fault)

    async def script(self, **script: Any) -> None:
        await self._request("POST", "/_sim/script", script)
