"""The official openai Python SDK through the relay: only the base URL and the key change.

RELAY_URL=ws://127.0.0.1:8080/v1 RELAY_TOKEN=dev-token python examples/python_sdk.py

The SDK reconnects by itself when the connection drops (1006, 1001, ...); its ``on_reconnecting``
hook tells it how. Through the relay, returning the resume token and the last event processed
brings back the same conversation, with nothing lost (README, "When the app's own connection
drops").
"""

from __future__ import annotations

import asyncio
import os

from openai import AsyncOpenAI
from openai.types import ReconnectingEvent, ReconnectingOverrides


class Resume:
    """What a reconnect needs: the relay's resume token and the last server event processed."""

    def __init__(self) -> None:
        self.token = ""
        self.last_event_id = ""

    def seen(self, event: object) -> None:
        if getattr(event, "type", None) == "relay.session_resumable":
            self.token = str(getattr(event, "resume_token", ""))
        elif event_id := getattr(event, "event_id", None):
            self.last_event_id = str(event_id)

    def on_reconnecting(self, event: ReconnectingEvent) -> ReconnectingOverrides:
        if not self.token or event.attempt > 2:  # the conversation is gone (410): start afresh
            return {"extra_headers": {}}
        return {
            "extra_headers": {
                "X-Relay-Resume-Token": self.token,
                "X-Relay-Last-Event-Id": self.last_event_id,
            }
        }


async def main() -> None:
    client = AsyncOpenAI(
        api_key=os.environ.get("RELAY_TOKEN", "dev-token"),  # a relay token, not a provider key
        websocket_base_url=os.environ.get("RELAY_URL", "ws://127.0.0.1:8080/v1"),
    )
    resume = Resume()
    async with client.realtime.connect(
        model="gpt-realtime",
        extra_query={"relay_resume": "1"},  # ask for the resume token as an event
        on_reconnecting=resume.on_reconnecting,
    ) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Say hello."}],
            }
        )
        await conn.response.create()
        async for event in conn:
            resume.seen(event)
            if event.type == "response.output_text.delta":
                print(event.delta, end="", flush=True)
            elif event.type == "response.done":
                print()
                break


if __name__ == "__main__":
    asyncio.run(main())
