"""The supervisor and the audio path with the live API's timing and real apps' traffic.

Against an upstream that behaves like the live API (``tests.support.live_upstream``: sessions
announced hundreds of milliseconds after the upgrade, answers a round trip late, the duration
cap, optional fields left out), an app streaming its microphone must notice nothing: no append
held for the new upstream's set-up, no expiry notice, nothing lost or repeated, no response cut.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from relay.io.handler import RELAY_CONTEXT
from tests.conftest import RelayFactory, RelayHandle
from tests.support.conversation import RecordingClient, text_item
from tests.support.live_upstream import LiveLikeUpstream, LiveSession

pytestmark = pytest.mark.slow
CHUNK = 960  # 20 ms of PCM16 at 24 kHz


def _noise(seconds: float, seed: int = 1) -> bytes:
    """Room noise at about -50 dBFS: what an open microphone sends between turns."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(24000 * seconds)) * 100).astype("<i2").tobytes()


async def _upstream(**options: Any) -> LiveLikeUpstream:
    return await LiveLikeUpstream(**options).start()


@pytest.fixture
async def live() -> AsyncIterator[list[LiveLikeUpstream]]:
    started: list[LiveLikeUpstream] = []
    yield started
    for upstream in started:
        await upstream.close()


async def _relay(start_relay: RelayFactory, upstream: LiveLikeUpstream, **settings: Any) -> RelayHandle:
    settings.setdefault("rotate_after_s", 0)
    return await start_relay(
        upstream="simulator",
        upstream_url=upstream.url,
        reconnect_base_delay_s=0.05,
        reconnect_max_delay_s=0.5,
        **settings,
    )


async def _stream(client: RecordingClient, audio: bytes) -> dict[int, float]:
    """Send ``audio`` as 20 ms appends paced in real time, as a microphone does; returns when
    each append (event id ``a-<n>``) was sent."""
    sent: dict[int, float] = {}
    start = time.monotonic()
    for n, offset in enumerate(range(0, len(audio), CHUNK)):
        await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
        chunk = base64.b64encode(audio[offset : offset + CHUNK]).decode()
        sent[n] = time.monotonic()
        await client.send({"type": "input_audio_buffer.append", "event_id": f"a-{n}", "audio": chunk})
    return sent


def _client_appends(session: LiveSession) -> list[tuple[int, float]]:
    return [
        (int(r.event["event_id"][2:]), r.at)
        for r in session.appends()
        if str(r.event.get("event_id", "")).startswith("a-")
    ]


@pytest.mark.parametrize("set_up_s", [0.3, 1.0], ids=["session-in-0.3s", "session-in-1s"])
async def test_rotation_does_not_hold_the_microphone_for_the_new_upstreams_set_up(
    start_relay: RelayFactory, live: list[LiveLikeUpstream], set_up_s: float
) -> None:
    upstream = await _upstream(handshake_s=set_up_s, ack_s=0.05)
    live.append(upstream)
    relay = await _relay(start_relay, upstream, rotate_after_s=1.5 + set_up_s, rotate_jitter_s=0)
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    audio = _noise(3 * (1.5 + 2 * set_up_s))
    sent = await _stream(client, audio)
    await asyncio.sleep(0.3)
    sessions = upstream.sessions
    assert len(sessions) >= 3, "expected at least two rotations"

    # Every append reached exactly one upstream session, in order, nothing lost or repeated.
    arrivals = [a for s in sessions for a in _client_appends(s)]
    assert [n for n, _ in arrivals] == list(range(len(sent)))
    # The old upstream kept serving while the new one was being set up: the app's audio went on
    # flowing to it during the whole upgrade and session announcement of its successor.
    for old, new, upgrade_started in zip(sessions, sessions[1:], upstream.upgrades_started[1:], strict=False):
        during = [at for _, at in _client_appends(old) if upgrade_started < at < new.opened_at]
        assert len(during) >= set_up_s / 0.02 * 0.6, f"appends held during the set-up: {len(during)} passed"
        # The new upstream's stream starts with the audio the old one still held (the VAD padding).
        replayed = [r for r in new.appends() if str(r.event["event_id"]).startswith("relay_")]
        tail = b"".join(base64.b64decode(r.event["audio"]) for r in replayed)
        assert tail
        assert bytes(old.audio).endswith(tail)
    delays = sorted(at - sent[n] for n, at in arrivals)
    print(
        f"\nappend delay at the upstream across {len(sessions) - 1} rotations: "
        f"p99 {delays[int(len(delays) * 0.99)] * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms"
    )
    # A hold for the set-up would show as a delay of at least set_up_s (measured: 0.25-0.31 s for
    # a 0.3 s set-up before this was fixed); the benchmark reports the real figures.
    assert delays[-1] < set_up_s * 0.75
    assert "error" not in client.types()
    client.assert_invariants()
    await client.close()


@pytest.mark.parametrize("omit_optional", [False, True], ids=["live-fields", "no-optional-fields"])
async def test_an_expiry_the_relay_recovers_from_never_reaches_the_app(
    start_relay: RelayFactory, live: list[LiveLikeUpstream], omit_optional: bool
) -> None:
    upstream = await _upstream(handshake_s=0.2, ack_s=0.03, expire_after_s=1.2, omit_optional=omit_optional)
    live.append(upstream)
    relay = await _relay(start_relay, upstream)
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    deadline = time.monotonic() + 4.0
    turns = 0
    while time.monotonic() < deadline:
        start = len(client.events)
        await client.send(text_item(f"question {turns}"))
        await client.send({"type": "response.create"})
        await client.wait_for("response.done", after=start)
        turns += 1
    expired = relay.metric("relay_upstream_events_hidden_total", {"reason": "session_expired"})
    assert expired >= 2, "the upstream should have expired during the conversation"
    assert "error" not in client.types()
    client.assert_invariants()
    # The conversation survived every replacement: the newest upstream holds every turn.
    wanted = [f"question {n}" for n in range(turns)]

    def questions() -> list[str]:
        session = upstream.sessions[-1]
        texts = [c.get("text") for i in session.items for c in i.get("content", [])]
        return [t for t in texts if t and t.startswith("question")]

    await _until(lambda: questions() == wanted)
    await client.close()


async def test_an_error_the_relays_own_replay_caused_is_not_shown(
    start_relay: RelayFactory, live: list[LiveLikeUpstream]
) -> None:
    upstream = await _upstream(handshake_s=0.05, ack_s=0.02)
    live.append(upstream)
    relay = await _relay(start_relay, upstream)
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    await client.send(text_item("remember me"))
    await client.wait_for("conversation.item.added")
    await upstream.drop(upstream.current)
    await _until(lambda: relay.metric("relay_upstream_replacements_total", {"cause": "1006"}) == 1)
    replacement = upstream.sessions[1]
    relay_event = next(r.event["event_id"] for r in replacement.received)
    assert str(relay_event).startswith("relay_")
    await upstream.send_error(replacement, "invalid_value", relay_event)
    await upstream.send_error(replacement, "invalid_value", "client-event-7")  # the app's own
    await client.wait_for("error")
    errors = [e for e in client.events if e["type"] == "error"]
    assert [e["error"]["event_id"] for e in errors] == ["client-event-7"]
    assert relay.metric("relay_upstream_events_hidden_total", {"reason": "relay_caused_error"}) == 1
    client.assert_invariants()
    await client.close()


async def test_samples_split_across_appends_reach_the_api_whole(
    start_relay: RelayFactory, live: list[LiveLikeUpstream]
) -> None:
    """The Realtime cookbook's chunker sent 1,323-byte PCM16 chunks; recorded sessions carry
    33-byte stubs. The relay forwards them all; it refuses only float32 sent as PCM16."""
    upstream = await _upstream(handshake_s=0.0, ack_s=0.0)
    live.append(upstream)
    relay = await _relay(start_relay, upstream)
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    audio = (np.sin(np.arange(24000) / 7) * 8000).astype("<i2").tobytes()
    pieces = [audio[i : i + size] for size in (33, 1323) for i in range(0, 12000, size)]
    for piece in pieces:
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()})
    floats = (np.sin(np.arange(24000) / 7) * 0.3).astype("<f4").tobytes()
    for i in range(0, len(floats), 1323):
        await client.send(
            {
                "type": "input_audio_buffer.append",
                "event_id": f"f-{i}",
                "audio": base64.b64encode(floats[i : i + 1323]).decode(),
            }
        )
    await client.send({"type": "input_audio_buffer.clear", "event_id": "done"})
    await client.wait_for("input_audio_buffer.cleared")  # after every answer to the appends
    assert bytes(upstream.current.audio).startswith(b"".join(pieces))  # every split sample, in order
    refused = [e for e in client.events if e["type"] == "error"]
    assert refused
    assert all(e["error"]["code"] == "invalid_audio_format" for e in refused)
    assert relay.metric("relay_audio_split_samples_total") > 0
    await client.close()


async def test_a_response_without_conversation_id_is_closed_once_and_not_asked_for_again(
    start_relay: RelayFactory, live: list[LiveLikeUpstream]
) -> None:
    upstream = await _upstream(handshake_s=0.1, ack_s=0.02, omit_optional=True, reply_words=40)
    live.append(upstream)
    relay = await _relay(start_relay, upstream)
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    await client.send(text_item("tell me a story"))
    await client.send({"type": "response.create"})
    await client.wait_for("response.output_text.delta")
    await upstream.drop(upstream.current)
    done = await client.wait_for("response.done")
    assert done["response"]["status"] == "incomplete"
    await _until(lambda: len(upstream.sessions) == 2 and not upstream.sessions[1].closed)
    await asyncio.sleep(0.3)
    # The response had started: a second one would answer twice. Only the app may ask again.
    assert not [r for r in upstream.sessions[1].received if r.event["type"] == "response.create"]
    start = len(client.events)
    await client.send({"type": "response.create"})
    assert (await client.wait_for("response.done", after=start))["response"]["status"] == "completed"
    client.assert_invariants()
    await client.close()


async def test_rotation_finds_quiet_moments_without_optional_fields(
    start_relay: RelayFactory, live: list[LiveLikeUpstream]
) -> None:
    upstream = await _upstream(handshake_s=0.1, ack_s=0.02, omit_optional=True)
    live.append(upstream)
    relay = await _relay(start_relay, upstream, rotate_after_s=1.0, rotate_jitter_s=0)
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    for n in range(8):
        start = len(client.events)
        await client.send(text_item(f"turn {n}"))
        await client.send({"type": "response.create"})
        done = await client.wait_for("response.done", after=start)
        assert done["response"]["status"] == "completed"
        await asyncio.sleep(0.15)
    assert len(upstream.sessions) >= 3
    assert relay.metric("relay_upstream_replacements_total", {"cause": "rotation"}) >= 2
    client.assert_invariants()
    await client.close()


async def test_an_open_microphone_keeps_only_the_vad_padding(
    start_relay: RelayFactory, live: list[LiveLikeUpstream]
) -> None:
    upstream = await _upstream(handshake_s=0.0, ack_s=0.0)
    live.append(upstream)
    relay = await _relay(start_relay, upstream)
    client = await RecordingClient.connect(relay.ws_url, relay.token)
    await client.wait_for("session.created")
    audio = _noise(30)
    for offset in range(0, len(audio), CHUNK):  # 30 s of room noise, as fast as it goes
        await client.send(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(audio[offset : offset + CHUNK]).decode(),
            }
        )
    await _until(lambda: len(upstream.current.audio) == len(audio))
    # Sent faster than real time, it is all kept until the server has had time to judge it.
    await asyncio.sleep(0.5)
    await client.send(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio[:CHUNK]).decode()}
    )
    await _until(lambda: len(upstream.current.audio) == len(audio) + CHUNK)
    (session,) = relay.app[RELAY_CONTEXT].registry.sessions.values()
    kept = session.supervisor.state.audio.kept_bytes
    assert kept <= (300 + 300 + 20) * 48, f"kept {kept} bytes of 30 s of uncommitted room noise"
    await client.close()


async def _until(condition: Any, timeout: float = 10.0) -> None:
    """Poll ``condition``: it reads another server's state, which has no event to wait on."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
