"""The lanes (relay.io.lanes) take the commonest frames in fewer steps, and change nothing.

Two conversations, one with the build's lanes (compiled in the compiled build) and one with the
pure-Python reference lanes, are fed the same frames through the same states (the upstream not
ready, ready, a format with a carry, a detached client): what each sends both ways, and what each
keeps (audio for a replay, the resume log, the audio count, the metrics), must be the same. And a
lane must decline what is not its frame, so that the full path answers it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from bench.hotpath import HotPath, Sink, open_hot_path
from relay.core import audio
from relay.core.protocol import STREAM_EVENT_TYPES
from relay.core.websocket import PyFrameReader, encode_frame
from relay.io import lanes
from relay.io.frame_path import MAX_EARLY_BYTES, MAX_EARLY_MESSAGES
from relay.io.lanes import AppendLane, DeltaLane, PyAppendLane, PyDeltaLane
from relay.io.link import UpstreamLink
from relay.io.websocket import WebSocketConnection
from tests.support.speech import speech_pcm16

PCM = speech_pcm16("Testing the lanes.")[: 960 * 8]


class Recorder(Sink):
    """A transport that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, data: list[bytes]) -> None:
        for chunk in data:
            self.data += chunk

    def messages(self, masked: bool) -> list[bytes]:
        reader = PyFrameReader(masked=masked, max_size=1 << 26)
        return [payload for _, payload in reader.feed(bytes(self.data))]


def append(audio: bytes, **extra: Any) -> bytes:
    encoded = base64.b64encode(audio).decode()
    return orjson.dumps({"type": "input_audio_buffer.append", "audio": encoded, **extra})


def delta(n: int) -> bytes:
    return (
        b'{"type":"response.output_audio.delta","event_id":"event_%d","response_id":"resp_1",'
        b'"item_id":"item_1","output_index":0,"content_index":0,"delta":"%s"}'
        % (n, base64.b64encode(PCM[:4800]))
    )


def client_frames() -> Iterator[bytes]:
    """The app's side: plain appends, and every kind a lane must leave to the full path."""
    yield append(PCM[:960])
    yield append(PCM[960:1920], event_id="evt_a")
    yield append(PCM[:100])  # too little to judge alone: carried
    yield append(PCM[:960])  # behind a carry: the full check's
    yield b'{"type":"input_audio_buffer.commit"}'
    yield append(PCM[:960])
    yield append(b"\x00\x00\x80\x3f" * 240)  # float32 ones: refused with the full path's error
    yield b'{"type":"input_audio_buffer.append","audio":"AAA="}'  # three bytes, valid
    yield b'{"type":"input_audio_buffer.append","audio":"!!!!"}'  # refused
    yield b'{"type": "input_audio_buffer.append", "audio": "' + base64.b64encode(PCM[:960]) + b'"}'
    yield append(PCM[:960], event_id="x" * 600)  # an id past the limit: refused
    for n in range(5):
        yield append(PCM[n * 960 : (n + 1) * 960], event_id=f"b{n}")


def server_frames() -> Iterator[bytes]:
    yield (  # an answer starts: the state's mirror follows its item (audio length, text)
        b'{"type":"response.created","event_id":"e0","response":{"id":"resp_1","object":"realtime.response",'
        b'"status":"in_progress","output":[],"conversation_id":"conv_1"}}'
    )
    yield (
        b'{"type":"response.output_item.added","event_id":"e1","response_id":"resp_1","output_index":0,'
        b'"item":{"id":"item_1","type":"message","role":"assistant","status":"in_progress","content":[]}}'
    )
    for n in range(4):
        yield delta(n)
        yield transcript(n, "Hi, " if n % 2 else 'a \\"quoted\\" caf\\u00e9 ')
    yield b'{"type":"response.output_text.delta","event_id":"e3","item_id":"item_1","delta":" text"}'
    yield b'{"type":"response.output_audio_transcript.delta","item_id":"item_0","delta":"other item"}'
    yield (
        b'{"type":"conversation.item.input_audio_transcription.delta","event_id":"e5",'
        b'"item_id":"item_u","content_index":0,"delta":"What"}'
    )
    yield b'{"type": "response.output_audio_transcript.delta", "item_id": "item_1", "delta": "!"}'
    yield delta(9)
    part = b'"response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0'
    yield b'{"type":"response.output_audio.done","event_id":"e8",%s}' % part
    yield b'{"type":"response.output_audio_transcript.done","event_id":"e9",%s,"transcript":"Hi"}' % part
    yield b'{"type":"response.content_part.done","event_id":"e10",%s,"part":{"type":"audio"}}' % part
    yield (
        b'{"type":"rate_limits.updated","event_id":"e11","rate_limits":[{"name":"tokens","limit":1000,'
        b'"remaining":900,"reset_seconds":1.5}]}'
    )


def tool_call_frames() -> Iterator[bytes]:
    yield (  # a tool call: the mirror gathers its arguments
        b'{"type":"response.output_item.added","event_id":"e6","response_id":"resp_1","output_index":1,'
        b'"item":{"id":"item_2","type":"function_call","status":"in_progress","call_id":"call_1",'
        b'"name":"lookup","arguments":""}}'
    )
    for piece in (b'{\\"city', b'\\":\\"Paris\\"}'):
        yield (
            b'{"type":"response.function_call_arguments.delta","event_id":"e7","response_id":"resp_1",'
            b'"item_id":"item_2","output_index":1,"call_id":"call_1","delta":"%s"}' % piece
        )


def transcript(n: int, text: str) -> bytes:
    return (
        b'{"type":"response.output_audio_transcript.delta","event_id":"t_%d","response_id":"resp_1",'
        b'"item_id":"item_1","output_index":0,"content_index":0,"delta":"%s"}' % (n, text.encode())
    )


async def _paths(http: aiohttp.ClientSession) -> tuple[HotPath, HotPath, HotPath]:
    """The build's lanes, the Python reference lanes, and none (every frame on the full path)."""
    built, reference, full = await open_hot_path(http), await open_hot_path(http), await open_hot_path(http)
    reference.client.lane = PyAppendLane(reference.session)
    assert reference.session.link is not None
    reference.upstream.lane = PyDeltaLane(reference.session, reference.session.link)
    full.client.lane = full.upstream.lane = None
    for path in (built, reference, full):
        path.recorded = (Recorder(), Recorder())  # type: ignore[attr-defined]
        path.client.connection_made(path.recorded[0])  # type: ignore[attr-defined]
        path.upstream.connection_made(path.recorded[1])  # type: ignore[attr-defined]
    return built, reference, full


def _same_ids(frames: list[bytes]) -> list[bytes]:
    """The relay's own errors carry ids it draws at random: one placeholder for them all."""
    return [re.sub(rb'"event_id":"event_[A-Za-z0-9]{21}"', b'"event_id":"event_?"', f) for f in frames]


def _kept(path: HotPath) -> dict[str, Any]:
    session = path.session
    audio = session.supervisor.state.audio
    frames = session.ctx.metrics.frames
    return {
        "to_upstream": path.recorded[1].messages(masked=True),  # type: ignore[attr-defined]
        "to_client": _same_ids(path.recorded[0].messages(masked=False)),  # type: ignore[attr-defined]
        "replay_audio": b"".join(audio._chunks),
        "stream_end": audio.end,
        # Where the stream was when its send time was first noted (when: the clock's to say).
        "first_mark": audio._marks[0][1] if audio._marks else None,
        "appended": session.checker.account.bytes,
        "resume_log": _same_ids(list(session.sent._frames)),
        "partial_audio_bytes": session.supervisor.state.partial_audio_bytes,
        "partial_text": session.supervisor.state.partial_text,
        "partial": session.supervisor.state.partial,
        "held": session.gate.held_count,
        "frames": {key: list(cell) for key, cell in frames._counts.items()},
        "latencies": {d: sum(counts) for d, counts in frames._latency.items()},
    }


def _feed(path: HotPath, client: list[bytes], server: list[bytes]) -> None:
    for frame in client:
        path.client.data_received(encode_frame(frame, mask=True))
    for frame in server:
        path.upstream.data_received(encode_frame(frame))


@pytest.mark.parametrize("state", ["ready", "not_ready", "pcmu", "detached"])
async def test_the_lanes_do_what_the_full_path_does(state: str) -> None:
    async with aiohttp.ClientSession() as http:
        built, reference, full = await _paths(http)
        for path in (built, reference, full):
            session = path.session
            if state == "not_ready":
                session.gate.session_ready = False  # held: the upstream's session is not ready
            elif state == "pcmu":
                session.checker.input_audio.set_encoding("pcmu")
            elif state == "detached":  # the app's connection dropped: answers go to the resume log
                path.client.connection_lost(None)
                await asyncio.sleep(0)
                assert session.detached
            _feed(path, list(client_frames()), list(server_frames()))
        assert _kept(built) == _kept(reference)
        assert _kept(built) == _kept(full)
        kept = _kept(built)
        if state == "ready":  # not a vacuous comparison: audio went up, deltas came down
            assert len(kept["to_upstream"]) >= 8
            assert sum(b'"response.output_audio.delta"' in m for m in kept["to_client"]) == 5
            assert sum(b'_transcript.delta"' in m for m in kept["to_client"]) == 6
            assert kept["partial_audio_bytes"] == 5 * 4800
            assert kept["partial_text"] == 'a "quoted" caf\u00e9 Hi, a "quoted" caf\u00e9 Hi,  text!'
            assert any(b'"invalid_audio_format"' in m for m in kept["to_client"])
        if state == "not_ready":
            assert kept["held"] > 0
        for path in (built, reference, full):
            _feed(path, [], list(tool_call_frames()))
        assert _kept(built) == _kept(reference) == _kept(full)
        if state == "ready":
            assert _kept(built)["partial"]["arguments"] == '{"city":"Paris"}'


async def test_each_lane_takes_its_frame_and_declines_the_rest() -> None:
    async with aiohttp.ClientSession() as http:
        path = await open_hot_path(http)
        session = path.session
        assert session.link is not None
        for append_lane, delta_lane in [
            (path.client.lane, path.upstream.lane),
            (PyAppendLane(session), PyDeltaLane(session, session.link)),
        ]:
            assert append_lane is not None
            assert delta_lane is not None
            assert append_lane.take(append(PCM[:960]))
            assert not append_lane.take(b'{"type":"input_audio_buffer.commit"}')
            assert not append_lane.take(append(PCM[:960])[:-1] + b',"x":1}')
            assert delta_lane.take(delta(1))
            assert not delta_lane.take(b'{"type":"response.done","event_id":"e","response":{}}')
            assert delta_lane.take(transcript(1, "Hi"))
            assert not delta_lane.take(transcript(1, "Hi")[:-2])  # not JSON: the full path's
            assert not delta_lane.take(b'{"type":"response.output_text.delta_more","delta":"x"}')
            assert delta_lane.take(b'{"type":"response.content_part.done","item_id":"item_1","part":{}}')
            assert delta_lane.take(b'{"type":"rate_limits.updated","rate_limits":[]}')
            assert not delta_lane.take(b'{"type":"response.output_item.done","item":{"id":"item_1"}}')
            supervisor = session.supervisor
            supervisor._alias["item_1"] = "item_app"  # the app knows this item by another id
            assert not delta_lane.take(transcript(1, "Hi"))
            assert delta_lane.take(delta(1))
            supervisor._alias.clear()


async def test_the_append_lane_sends_to_whichever_upstream_is_current() -> None:
    """The compiled lane holds the current upstream's connection (told by ``Conversation.link``)
    rather than reading the conversation per frame: after a replacement, and with none, its
    appends go where the full path's would, never to the upstream that was replaced."""
    async with aiohttp.ClientSession() as http:
        path = await open_hot_path(http)
        session, old = path.session, path.session.link
        assert old is not None
        old_wire, new_wire = Recorder(), Recorder()
        old.conn.connection_made(old_wire)  # type: ignore[arg-type]
        new = UpstreamLink(
            WebSocketConnection(client_side=True, max_size=1 << 24), old.target, time.monotonic()
        )
        new.conn.connection_made(new_wire)  # type: ignore[arg-type]
        assert path.client.lane.upstream is old.conn  # type: ignore[union-attr]
        session.attach(new)  # as a rotation's switch does
        assert path.client.lane.upstream is new.conn  # type: ignore[union-attr]
        path.client.data_received(encode_frame(append(PCM[:960], event_id="after"), mask=True))
        assert [orjson.loads(m).get("event_id") for m in new_wire.messages(masked=True)] == ["after"]
        assert old_wire.messages(masked=True) == []
        session.link = None  # between two upstreams: held, then sent to the next one
        assert path.client.lane.upstream is None  # type: ignore[union-attr]
        path.client.data_received(encode_frame(append(PCM[:960], event_id="held"), mask=True))
        assert session.gate.held_count == 1
        assert len(new_wire.messages(masked=True)) == 1


def test_the_stream_events_are_ones_the_full_path_tracks_only_in_the_mirror() -> None:
    """The delta lane does for a stream event only what the state's mirror does: each must be a
    type no other step of the full path treats apart (usage, the snapshot's version, releasing
    holds, transcripts' order, item echoes, errors, sessions)."""
    from relay.io import budgets, conversation, supervisor

    special = (
        conversation._UNTRACKED_SERVER_TYPES
        | conversation._RELEASING_SERVER_TYPES
        | conversation._SNAPSHOT_TYPES
        | budgets.USAGE_EVENTS
        | supervisor._COMMIT_ORDERED
        | supervisor._ITEM_ECHOES
        | {"error", "session.created", "session.updated", "conversation.item.retrieved"}
    )
    assert not special & set(STREAM_EVENT_TYPES)
    assert len(set(STREAM_EVENT_TYPES)) == len(STREAM_EVENT_TYPES)


def test_the_build_runs_its_own_lanes_and_the_compiled_constants_match_the_reference() -> None:
    from relay.core import speedups

    compiled = speedups.compiled("relay.io._frame_path")
    if compiled is None:
        assert (AppendLane, DeltaLane) == (PyAppendLane, PyDeltaLane)
        pytest.skip("the pure-Python build: no compiled constants to compare")
    assert (AppendLane, DeltaLane) == (compiled.AppendLane, compiled.DeltaLane)
    assert compiled.constants() == {
        "MIN_JUDGED_BYTES": audio._MIN_JUDGED_BYTES,
        "MAX_EARLY_MESSAGES": MAX_EARLY_MESSAGES,
        "MAX_EARLY_BYTES": MAX_EARLY_BYTES,
        "AUDIO_DELTA_PREFIX": lanes.AUDIO_DELTA_PREFIX,
        "STREAM_EVENT_PREFIXES": lanes.STREAM_EVENT_PREFIXES,
    }
