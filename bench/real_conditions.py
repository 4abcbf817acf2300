"""Real conditions: open microphones, rotations with the live API's session set-up, memory.

An instant upstream hides what a rotation costs: the live API announces a session hundreds of
milliseconds after the upgrade and answers a round trip late. Here the simulator keeps that
timing (the upgrade answered after ``set_up_ms``, 50 ms acknowledgements), every app streams an
always-on microphone (a spoken sentence, then room noise, over and over) under the API's default
server VAD, the server answers each turn, and the relay rotates every few seconds. Reported: the
delay of every append at the upstream across the rotations, frames lost, responses cut.

The memory run holds open microphones on a fresh relay process for a while and reads its RSS:
with VAD the relay keeps only the audio the API itself still holds, so the cost per session must
not grow with the session's length.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.load import Schedule, Stamps, VoiceApp, drive, open_app
from bench.servers import TOKEN, metric, start_relay
from relay.simulator.audio import synthesize
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing

APPEND_MS = 20
_MARKER = b'"response.output_audio.delta"'
_HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def _chunks(audio: bytes) -> list[str]:
    import base64

    size = APPEND_MS * 48
    return [base64.b64encode(audio[i : i + size]).decode() for i in range(0, len(audio) - size + 1, size)]


def room_noise(seconds: float, seed: int = 0) -> bytes:
    """About -60 dBFS of noise: a quiet room behind an open microphone."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(24000 * seconds)) * 30).astype("<i2").tobytes()


def open_mic(speech_s: float = 2.0, noise_s: float = 4.0) -> list[str]:
    """One cycle of an always-on microphone as 20 ms appends: a sentence, then the room."""
    sentence = synthesize("Could you tell me something nice about today?", "pcm16")
    speech = sentence[: int(speech_s * 48000)].ljust(int(speech_s * 48000), b"\0")
    return _chunks(speech + room_noise(noise_s))


def _appender(cycle: list[str], tag: str) -> Callable[[int, int], tuple[str, bytes]]:
    def append(index: int, seq: int) -> tuple[str, bytes]:
        key = f"b{tag}{index}x{seq}"
        chunk = cycle[(seq + index * 37) % len(cycle)]  # apps are not in step with each other
        return key, f'{{"type":"input_audio_buffer.append","event_id":"{key}","audio":"{chunk}"}}'.encode()

    return append


async def _apps(url: str, stamps: Stamps, count: int) -> list[VoiceApp]:
    apps = []
    for _ in range(count):
        apps.append(await open_app(url, stamps, _HEADERS, _MARKER))
        await asyncio.sleep(0.01)
    return apps


async def _stream(apps: list[VoiceApp], stamps: Stamps, cycle: list[str], seconds: float, tag: str) -> None:
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.1
    starts = [begin + APPEND_MS / 1000 * i / len(apps) for i in range(len(apps))]
    schedule = Schedule(APPEND_MS / 1000, math.inf, seconds, turns=False)
    await drive(apps, starts, schedule, _appender(cycle, tag), stamps, ())


async def _close(apps: list[VoiceApp]) -> None:
    for app in apps:
        app.close()
    await asyncio.wait([asyncio.ensure_future(app.closed) for app in apps], timeout=10)


async def rotation_under_open_mics(
    set_up_ms: float, sessions: int, seconds: float, rotate_every_s: float
) -> dict[str, Any]:
    """Append delay at the upstream, frames lost and responses cut while the relay rotates."""
    stamps = Stamps()
    timing = dataclasses.replace(Timing.realistic(), handshake_ms=set_up_ms)
    config = SimulatorConfig(speed=1.0, reply_text="Sure.", timing=timing, probe=stamps.probe)
    runner, sim_port = await start_simulator(config)
    relay = await start_relay(sim_port, rotate_after_s=rotate_every_s, quiet_max_wait_s=rotate_every_s)
    try:
        url = f"ws://127.0.0.1:{relay.port}/v1/realtime?model=gpt-realtime"
        apps = await _apps(url, stamps, sessions)
        await _stream(apps, stamps, open_mic(), seconds, f"r{set_up_ms:g}.")
        await asyncio.sleep(2.0)  # answers to the last turns
        text = await relay.metrics()
        await _close(apps)
    finally:
        relay.stop()
        await runner.cleanup()
    delays = stamps.latencies("c2u")
    statuses = stamps.response_statuses
    return {
        "set_up_ms": set_up_ms,
        "sessions": sessions,
        "seconds": seconds,
        "rotations": metric(text, "relay_upstream_replacements_total"),
        "appends": len(delays),
        "append_p50_ms": float(np.percentile(delays, 50)) if len(delays) else math.nan,
        "append_p99_ms": float(np.percentile(delays, 99)) if len(delays) else math.nan,
        "append_max_ms": float(delays.max()) if len(delays) else math.nan,
        "lost": float(stamps.lost()),
        "responses_completed": float(statuses.get("completed", 0)),
        "responses_cut": float(sum(n for s, n in statuses.items() if s != "completed")),
        "hidden_upstream_events": metric(text, "relay_upstream_events_hidden_total"),
    }


async def open_mic_rss(sessions: int, seconds: float) -> dict[str, Any]:
    """RSS per session of a fresh relay holding open microphones (room noise, server VAD)."""
    import psutil

    stamps = Stamps()
    runner, sim_port = await start_simulator(SimulatorConfig(timing=Timing.fast(), probe=stamps.probe))
    relay = await start_relay(sim_port)
    process = psutil.Process(relay.proc.pid)
    try:
        url = f"ws://127.0.0.1:{relay.port}/v1/realtime?model=gpt-realtime"
        warm = await _apps(url, stamps, 5)
        await _close(warm)
        base = process.memory_info().rss
        apps = await _apps(url, stamps, sessions)
        idle = process.memory_info().rss
        noise = _chunks(room_noise(10.0, seed=3))
        samples: list[tuple[float, int]] = []
        third = seconds / 3
        for step in range(3):
            await _stream(apps, stamps, noise, third, f"m{step}.")
            samples.append(((step + 1) * third, process.memory_info().rss))
        await _close(apps)
    finally:
        relay.stop()
        await runner.cleanup()
    per_session = [(t, (rss - base) / sessions / 1024) for t, rss in samples]
    return {
        "sessions": sessions,
        "seconds": seconds,
        "idle_kib_per_session": (idle - base) / sessions / 1024,
        "kib_per_session": per_session,  # (seconds streamed, KiB per session) at each third
        "growth_kib_per_session_minute": (per_session[-1][1] - per_session[0][1]) / (2 * third) * 60,
        "lost": float(stamps.lost()),
    }
