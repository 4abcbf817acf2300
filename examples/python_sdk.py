"""The official openai Python SDK through the relay: only the base URL and the key change.

RELAY_URL=ws://127.0.0.1:8080/v1 RELAY_TOKEN=dev-token python examples/python_sdk.py
"""

from __future__ import annotations

import asyncio
import os

from openai import AsyncOpenAI


async def main() -> None:
    client = AsyncOpenAI(
        api_key=os.environ.get("RELAY_TOKEN", "dev-token"),  # a relay token, not a provider key
        websocket_base_url=os.environ.get("RELAY_URL", "ws://127.0.0.1:8080/v1"),
    )
    async with client.realtime.connect(model="gpt-realtime") as conn:
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
            if event.type == "response.output_text.delta":
                print(event.delta, end="", flush=True)
            elif event.type == "response.done":
                print()
                break


if __name__ == "__main__":
    asyncio.run(main())
