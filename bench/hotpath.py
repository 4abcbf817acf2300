"""The relay's own work per forwarded frame, without sockets: ``python -m bench.hotpath``.

A real ``Conversation`` (validation on, metrics, supervisor state, readiness gate) sits between two
WebSocket connections whose transports only collect what is written. Client frames are fed as a
browser sends them (masked 20 ms PCM16 appends) and upstream frames as the API sends them (audio
deltas). What this times is the Python the relay runs per frame; the benchmark's CPU per frame
minus this is the kernel's and the event loop's share. It is also the harness for profiling the
hot path without network noise: run it under ``py-spy record`` or ``valgrind --tool=callgrind``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

from bench.audio import speech_like
from relay.core.credentials import Authenticator
from relay.core.websocket import encode_frame
from relay.io.context import RelayContext, SessionRegistry
from relay.io.conversation import Conversation
from relay.io.link import UpstreamLink
from relay.io.upstream import UpstreamConfig
from relay.io.websocket import WebSocketConnection
from relay.observability.metrics import RelayMetrics
from relay.settings import load_settings


class Sink:
    """A transport that keeps count of what it was given and never pushes back."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, data: list[bytes]) -> None:
        self.writes += len(data)

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


# One answer's server events besides its audio deltas, as the simulator sent them (19: the commit's,
# the user and assistant items', the response's, six transcript deltas).
_TURN_EVENTS = [
    event.encode() for event in orjson.loads((Path(__file__).parent / "turn_events.json").read_bytes())
]
_TURN_IDS = sorted(set(re.findall(rb'"((?:item|resp|event)_[A-Za-z0-9]+)"', b"".join(_TURN_EVENTS))), key=len)
_TURN_CLIENT = [
    encode_frame(frame, mask=True)
    for frame in (b'{"type":"input_audio_buffer.commit"}', b'{"type":"response.create"}')
]

_ANSWER_START = [
    encode_frame(frame)
    for frame in (
        b'{"type":"response.created","event_id":"event_r","response":{"id":"resp_1",'
        b'"object":"realtime.response","status":"in_progress","output":[]}}',
        b'{"type":"response.output_item.added","event_id":"event_i","response_id":"resp_1",'
        b'"output_index":0,"item":{"id":"item_1","type":"message","role":"assistant",'
        b'"status":"in_progress","content":[]}}',
    )
]


def turn_frames(turn: int) -> list[bytes]:
    """Turn ``turn``'s server frames: the same events with ids of their own."""
    frames = []
    for event in _TURN_EVENTS:
        for known in _TURN_IDS:
            event = event.replace(known, known + b"t%d" % turn)
        frames.append(encode_frame(event))
    return frames


class HotPath:
    """One session wired to null transports; ``c2u()`` / ``u2c()`` forward one frame each."""

    def __init__(self, session: Conversation, client: WebSocketConnection, upstream: WebSocketConnection):
        self.session, self.client, self.upstream = session, client, upstream
        self.client_sink, self.upstream_sink = Sink(), Sink()
        client.connection_made(self.client_sink)  # type: ignore[arg-type]
        upstream.connection_made(self.upstream_sink)  # type: ignore[arg-type]
        chunk = base64.b64encode(speech_like(20)).decode()
        self.appends = [
            encode_frame(
                f'{{"type":"input_audio_buffer.append","event_id":"b{i}","audio":"{chunk}"}}'.encode(),
                mask=True,
            )
            for i in range(500)
        ]
        delta = base64.b64encode(speech_like(100)).decode()
        self.deltas = [
            encode_frame(
                (
                    f'{{"type":"response.output_audio.delta","event_id":"event_{i}","response_id":"resp_1",'
                    f'"item_id":"item_1","output_index":0,"content_index":0,"delta":"{delta}"}}'
                ).encode()
            )
            for i in range(500)
        ]
        self.texts = [
            encode_frame(
                (
                    f'{{"type":"response.output_audio_transcript.delta","event_id":"event_t{i}",'
                    f'"response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,'
                    f'"delta":" word{i % 10}"}}'
                ).encode()
            )
            for i in range(500)
        ]
        self.sent = 0  # frames fed in each direction
        self.received = 0
        self.texts_received = 0

    def write_appends_as(self, form: str) -> None:
        """The appends as another client writes them: ``"json.dumps"`` (the openai SDK: a space
        after each ',' and ':') or ``"pydantic"`` (the Agents SDK: the audio first)."""
        chunk = base64.b64encode(speech_like(20)).decode()
        for i in range(500):
            event = {"type": "input_audio_buffer.append", "event_id": f"b{i}", "audio": chunk}
            text = (
                json.dumps(event)
                if form == "json.dumps"
                else json.dumps(
                    {"audio": chunk, "type": event["type"], "event_id": event["event_id"]},
                    separators=(",", ":"),
                )
            )
            self.appends[i] = encode_frame(text.encode(), mask=True)

    def c2u(self) -> None:
        self.client.data_received(self.appends[self.sent % 500])
        self.sent += 1
        if self.sent % 500 == 0:  # as a commit would: the replay copy of the audio stays bounded
            self.session.supervisor.state.on_server_event({"type": "input_audio_buffer.committed"})

    def u2c(self) -> None:
        self.upstream.data_received(self.deltas[self.received % 500])
        self.received += 1

    def u2c_text(self) -> None:
        """A transcript delta of an answer being streamed (the mirror follows its text); a new
        answer every 500, as a real one would end, so the text the mirror holds stays short."""
        if self.texts_received % 500 == 0:
            for frame in _ANSWER_START:
                self.upstream.data_received(frame)
        self.upstream.data_received(self.texts[self.texts_received % 500])
        self.texts_received += 1

    def turn(self, server_frames: list[bytes]) -> None:
        """One turn without its audio deltas: 200 ms of appends, the commit and response.create,
        then the answer's other events (``turn_frames``)."""
        for _ in range(10):
            self.c2u()
        for frame in _TURN_CLIENT:
            self.client.data_received(frame)
        for frame in server_frames:
            self.upstream.data_received(frame)


async def open_hot_path(http: aiohttp.ClientSession) -> HotPath:
    settings = load_settings(client_tokens=["bench"])
    ctx = RelayContext(
        settings=settings,
        http=http,
        upstreams=UpstreamConfig(settings, simulator_url="ws://127.0.0.1:9/v1/realtime", token_provider=None),
        metrics=RelayMetrics(CollectorRegistry()),
        authenticator=Authenticator(settings),
        registry=SessionRegistry(settings.max_sessions, settings.max_sessions_per_identity),
    )
    client = WebSocketConnection(client_side=False, max_size=settings.max_message_bytes)
    upstream = WebSocketConnection(client_side=True, max_size=settings.max_message_bytes)
    session = Conversation(ctx, session_id="relay_bench", identity_key="bench", model="gpt-realtime")
    target = await ctx.upstreams.target("gpt-realtime", "relay_bench")
    path = HotPath(session, client, upstream)  # wires the transports before the session uses them
    session.attach_client(client)
    session.attach(UpstreamLink(upstream, target, time.monotonic()))
    session.gate.session_ready = True
    return path


def per_frame_us(step: Any, frames: int = 5000, repeats: int = 7) -> float:
    """Median over ``repeats`` batches of the microseconds one call of ``step`` takes."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(frames):
            step()
        times.append((time.perf_counter() - started) / frames * 1e6)
    return statistics.median(times)


async def measure(frames: int = 5000, interleaved: int = 100) -> dict[str, Any]:
    """One session fed alone, then ``interleaved`` sessions fed in turn, as a loaded relay
    sees them: each frame then finds its session's objects colder in the CPU's caches."""
    async with aiohttp.ClientSession() as http:
        path = await open_hot_path(http)
        c2u, u2c = per_frame_us(path.c2u, frames), per_frame_us(path.u2c, frames)
        forwarded = (path.upstream_sink.writes, path.client_sink.writes)
        result = {"c2u_us": c2u, "u2c_us": u2c, "forwarded": forwarded, "fed": (path.sent, path.received)}
        full = await open_hot_path(http)
        full.client.lane = None  # every append on the full path: what the lane spares
        result["c2u_full_path_us"] = per_frame_us(full.c2u, frames)
        for form in ("json.dumps", "pydantic"):
            sdk = await open_hot_path(http)
            sdk.write_appends_as(form)
            result[f"c2u_{form.replace('.', '_')}_us"] = per_frame_us(sdk.c2u, frames)
        texts = await open_hot_path(http)
        result["u2c_text_us"] = per_frame_us(texts.u2c_text, frames)
        starts = len(_ANSWER_START) * -(-texts.texts_received // 500)
        result["text_forwarded"] = (texts.client_sink.writes - starts, texts.texts_received)
        if interleaved > 1:
            paths = [await open_hot_path(http) for _ in range(interleaved)]
            turn = _round_robin(paths)
            result["interleaved"] = interleaved
            result["c2u_interleaved_us"] = per_frame_us(lambda: next(turn).c2u(), frames)
            result["u2c_interleaved_us"] = per_frame_us(lambda: next(turn).u2c(), frames)
        result["turn_us"] = await turn_us(http)
        return result


async def turn_us(http: aiohttp.ClientSession, turns: int = 600, block: int = 100) -> list[float]:
    """Microseconds per turn, per ``block`` of turns, from a fresh conversation to a long one
    (the relay's mirror holds up to 500 items; a turn adds two)."""
    path = await open_hot_path(http)
    frames = [turn_frames(n) for n in range(turns)]
    times = []
    for start in range(0, turns, block):
        started = time.perf_counter()
        for n in range(start, start + block):
            path.turn(frames[n])
        times.append((time.perf_counter() - started) / block * 1e6)
    return times


def _round_robin(paths: list[HotPath]) -> Iterator[HotPath]:
    while True:
        yield from paths


def main() -> None:
    result = asyncio.run(measure())
    if "--json" in sys.argv[1:]:  # for bench/runner.py, which runs this for the pure-Python build
        print(orjson.dumps(result).decode())
        return
    print(
        f"relay's own work per frame (no sockets): client->upstream append {result['c2u_us']:.1f} us, "
        f"upstream->client audio delta {result['u2c_us']:.1f} us, transcript delta "
        f"{result['u2c_text_us']:.1f} us; the append as the openai SDK writes it "
        f"{result['c2u_json_dumps_us']:.1f} us, as the Agents SDK does {result['c2u_pydantic_us']:.1f} us, "
        f"on the full path (no lane) {result['c2u_full_path_us']:.1f} us; {result['interleaved']} sessions "
        f"in turn: {result['c2u_interleaved_us']:.1f} us, {result['u2c_interleaved_us']:.1f} us; "
        f"a turn's other events and 10 appends, per 100 turns from a fresh conversation: "
        + ", ".join(f"{us:.0f}" for us in result["turn_us"])
        + " us"
    )


if __name__ == "__main__":
    main()
