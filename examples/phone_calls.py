"""A phone agent's server, through the relay: the SIP webhook in, the accept and the call's control
socket out, with the relay's token instead of the provider key.

    RELAY_URL=http://127.0.0.1:8080 RELAY_TOKEN=dev-token OPENAI_WEBHOOK_SECRET=whsec_... \\
        python examples/phone_calls.py --port 8090

Point the OpenAI project's webhook (event ``realtime.call.incoming``) at ``/webhook``. For each
call it verifies the signature (the openai SDK's ``webhooks.unwrap``), accepts the call through
the relay (which checks the accept and pins the call's G.711 formats), opens the control socket
(``/v1/realtime?call_id=...``), greets the caller, and hangs up when the caller says goodbye or
the model calls its ``end_call`` tool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

import aiohttp
from aiohttp import web
from openai import AsyncOpenAI

RELAY_URL = os.environ.get("RELAY_URL", "http://127.0.0.1:8080")
RELAY_TOKEN = os.environ.get("RELAY_TOKEN", "dev-token")
END_CALL = {
    "type": "function",
    "name": "end_call",
    "description": "Ends the call when the caller is done.",
    "parameters": {"type": "object", "properties": {}, "required": []},
}
ACCEPT = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You are a friendly receptionist on a phone line. Be brief.",
    "tools": [END_CALL],  # no audio formats: the relay fills in the call's G.711 ones
    "audio": {"input": {"transcription": {"model": "gpt-4o-mini-transcribe"}}},
}
AUTH = {"Authorization": f"Bearer {RELAY_TOKEN}"}


async def webhook(request: web.Request) -> web.Response:
    body = await request.text()
    try:
        event = request.app["openai"].webhooks.unwrap(body, dict(request.headers))
    except Exception:  # a forged or stale delivery
        return web.Response(status=400, text="invalid signature")
    if event.type == "realtime.call.incoming":
        task = asyncio.create_task(answer(request.app["http"], event.data.call_id))
        request.app["calls"].add(task)
        task.add_done_callback(request.app["calls"].discard)
    return web.Response(status=200)


async def answer(http: aiohttp.ClientSession, call_id: str) -> None:
    calls = f"{RELAY_URL}/v1/realtime/calls/{call_id}"
    async with http.post(f"{calls}/accept", json=ACCEPT, headers=AUTH) as resp:
        if resp.status != 200:
            print(f"accept refused: {resp.status} {await resp.text()}", flush=True)
            return
    socket_url = RELAY_URL.replace("http", "ws", 1) + f"/v1/realtime?call_id={call_id}"
    async with http.ws_connect(socket_url, headers=AUTH, protocols=("realtime",)) as ws:
        await ws.send_str(json.dumps({"type": "response.create"}))  # greet the caller
        async for message in ws:
            event: dict[str, Any] = json.loads(message.data)
            if event["type"] == "conversation.item.input_audio_transcription.completed":
                print(f"caller: {event['transcript']}", flush=True)
                if "goodbye" in event["transcript"].lower():
                    break
            elif event["type"] == "response.done":
                outputs = event["response"].get("output") or []
                if any(o.get("type") == "function_call" and o.get("name") == "end_call" for o in outputs):
                    break
            elif event["type"] == "error":
                print(f"error: {event['error']['message']}", flush=True)
    async with http.post(f"{calls}/hangup", headers=AUTH) as resp:
        print(f"hung up: {resp.status}", flush=True)


async def main(port: int) -> None:
    app = web.Application()
    app["openai"] = AsyncOpenAI(api_key="unused", webhook_secret=os.environ["OPENAI_WEBHOOK_SECRET"])
    app["calls"] = set()
    app.router.add_post("/webhook", webhook)
    async with aiohttp.ClientSession() as http:
        app["http"] = http
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"listening on http://127.0.0.1:{port}/webhook", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    asyncio.run(main(parser.parse_args().port))
