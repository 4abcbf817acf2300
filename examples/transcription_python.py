"""Live transcription through the relay with the official openai Python SDK.

The app runs its own voice activity detection (here: one utterance per WAV file) and, per
utterance, clears the buffer, appends 20 ms chunks of 24 kHz 16-bit mono PCM, and commits; the
transcripts arrive as the API sends them, each under the item id of its commit, in commit order,
whatever happens to the upstream session meanwhile.

RELAY_URL=ws://127.0.0.1:8080/v1 RELAY_TOKEN=dev-token python examples/transcription_python.py a.wav b.wav
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import wave

from openai import AsyncOpenAI

CHUNK = 960  # 20 ms of 24 kHz 16-bit mono


def pcm16(path: str) -> bytes:
    with wave.open(path, "rb") as wav:
        if (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) != (24000, 2, 1):
            raise SystemExit(f"{path}: expected 24 kHz 16-bit mono PCM")
        return wav.readframes(wav.getnframes())


async def main(paths: list[str]) -> None:
    client = AsyncOpenAI(
        api_key=os.environ.get("RELAY_TOKEN", "dev-token"),  # a relay token, not a provider key
        websocket_base_url=os.environ.get("RELAY_URL", "ws://127.0.0.1:8080/v1"),
    )
    # A transcription session: no model, intent=transcription (as on the API itself).
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "turn_detection": None,  # the app decides where utterances end
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "noise_reduction": {"type": "near_field"},
                    }
                },
                "include": ["item.input_audio_transcription.logprobs"],
            }
        )
        for path in paths:
            audio = pcm16(path)
            await conn.input_audio_buffer.clear()
            for start in range(0, len(audio), CHUNK):
                await conn.input_audio_buffer.append(
                    audio=base64.b64encode(audio[start : start + CHUNK]).decode()
                )
            await conn.input_audio_buffer.commit()
        done = 0
        async for event in conn:
            if event.type == "conversation.item.input_audio_transcription.completed":
                print(f"{event.item_id}: {event.transcript}", flush=True)
                done += 1
            elif event.type == "conversation.item.input_audio_transcription.failed":
                print(f"{event.item_id}: (failed: {event.error.message})", flush=True)
                done += 1
            elif event.type == "error":
                print(f"error: {event.error.message}", file=sys.stderr, flush=True)
            if done == len(paths):
                break


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
