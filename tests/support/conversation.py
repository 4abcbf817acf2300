"""A recording Realtime client for end-to-end checks of what an app sees through the relay."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import websockets
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection

Event = dict[str, Any]


class RecordingClient:
    """Reads every server event into ``events``; offers waits and the app-level invariants."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[Event] = []
        self.sent: list[Event] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self.relay_session = ws.response.headers.get("X-Relay-Session-Id", "") if ws.response else ""

    @classmethod
    async def connect(cls, url: str, token: str, **kwargs: Any) -> RecordingClient:
        ws = await websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None, **kwargs
        )
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.events.append(orjson.loads(message))
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        self._changed.set()

    async def send(self, event: Event) -> None:
        self.sent.append(event)
        await self.ws.send(orjson.dumps(event).decode())

    async def wait_for(
        self,
        event_type: str,
        where: Callable[[Event], bool] = lambda _: True,
        *,
        after: int = 0,
        timeout: float = 15,
    ) -> Event:
        """The first event of ``event_type`` at index >= ``after`` matching ``where``."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if event.get("type") == event_type and where(event):
                        return event
                if self._reader.done():
                    raise AssertionError(f"connection closed before {event_type}: {self.types()[-10:]}")
                self._changed.clear()
                await self._changed.wait()

    def types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    async def cut(self) -> None:
        """The network goes away: no close frame, the relay sees the TCP connection end (1006)."""
        self.ws.transport.abort()
        await self._reader

    def resume_token(self) -> str:
        """The latest token of the opt-in ``relay.session_resumable`` event (``?relay_resume=1``)."""
        resumable = [e for e in self.events if e["type"] == "relay.session_resumable"]
        assert resumable, "no relay.session_resumable event"
        return str(resumable[-1]["resume_token"])

    def assert_invariants(self) -> None:
        """What a client must never see, whatever happened upstream."""
        types = self.types()
        assert types.count("session.created") == 1, "the client saw more than one session"
        ids = Counter(e.get("event_id") for e in self.events if e.get("event_id"))
        duplicates = [i for i, n in ids.items() if n > 1]
        assert not duplicates, f"events delivered twice: {duplicates[:5]}"
        created = Counter(e["response"]["id"] for e in self.events if e["type"] == "response.created")
        done = Counter(e["response"]["id"] for e in self.events if e["type"] == "response.done")
        for response_id in created:
            assert done[response_id] == 1, f"{response_id}: {done[response_id]} response.done"
        added = Counter(e["item"]["id"] for e in self.events if e["type"] == "conversation.item.added")
        echoed = [i for i, n in added.items() if n > 1]
        assert not echoed, f"items announced twice (replay echo): {echoed[:5]}"
        session_ids = {
            e["session"]["id"] for e in self.events if e["type"] in ("session.created", "session.updated")
        }
        assert len(session_ids) == 1, f"the client saw several session ids: {session_ids}"
        assert_sdk_parses(self.events)


# What the official SDK parses every server event with: an event it refuses is an error in the
# app (the Agents SDK then lost track of its turns). The relay's own opt-in events are its own.
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
_RELAY_OWN = ("relay.",)


def assert_sdk_parses(events: list[Event]) -> None:
    """Every server event (the simulator's and the relay's own) as the openai SDK reads it."""
    for event in events:
        if not str(event.get("type")).startswith(_RELAY_OWN):
            try:
                SERVER_EVENT.validate_python(event)
            except ValidationError as exc:
                raise AssertionError(f"the openai SDK refuses {str(event)[:300]}: {exc}") from None


def assert_one_stream(events: list[Event]) -> None:
    """The events an app processed across several connections: as one connection would give."""
    types = [e["type"] for e in events]
    assert types.count("session.created") == 1
    ids = Counter(e["event_id"] for e in events)
    assert not [i for i, n in ids.items() if n > 1], "an event was delivered twice"
    created = Counter(e["response"]["id"] for e in events if e["type"] == "response.created")
    done = Counter(e["response"]["id"] for e in events if e["type"] == "response.done")
    assert created == done
    assert set(done.values()) <= {1}


def text_item(text: str, item_id: str | None = None) -> Event:
    item: Event = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id:
        item["id"] = item_id
    return {"type": "conversation.item.create", "item": item}
