"""Micro-measurements: validation per event, replay planning versus conversation length."""

from __future__ import annotations

import base64
import time

import numpy as np
import orjson

from bench.audio import speech_like


def validation_micro() -> dict[str, float]:
    """Median microseconds to validate a 20 ms append and a large session.update."""
    from relay.core.audio import check_append
    from relay.core.validation import Validator, parse_client_frame

    append = orjson.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(speech_like(20)).decode()}
    )
    update = orjson.dumps(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "x" * 4000,
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "turn_detection": {"type": "server_vad", "threshold": 0.5},
                        "transcription": {"model": "whisper-1"},
                    },
                    "output": {"voice": "marin", "speed": 1.0},
                },
                "tools": [
                    {
                        "type": "function",
                        "name": f"tool_{i}",
                        "description": "d" * 100,
                        "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
                    }
                    for i in range(20)
                ],
            },
        }
    )
    validator = Validator()

    def one(frame: bytes) -> float:
        samples = []
        for _ in range(2000):
            start = time.perf_counter()
            event = parse_client_frame(frame)
            validator.check(event)
            if event["type"] == "input_audio_buffer.append":
                check_append(event["audio"], "pcm16", None)
            samples.append(time.perf_counter() - start)
        return float(np.median(samples) * 1e6)

    return {"append_20ms_us": one(append), "session_update_large_us": one(update)}


def replay_micro() -> dict[int, float]:
    """Milliseconds to plan a replay of 10 / 100 / 500 items (the planning, not the network)."""
    from relay.core.replay import plan_replay
    from relay.core.session import SessionState

    results = {}
    for count in (10, 100, 500):
        state = SessionState()
        state.on_server_event({"type": "session.created", "session": {"type": "realtime", "id": "s"}})
        for i in range(count):
            item = {
                "id": f"item_{i}",
                "type": "message",
                "role": "user" if i % 2 else "assistant",
                "content": [{"type": "input_text", "text": "hello " * 10}],
            }
            state.on_server_event({"type": "conversation.item.added", "item": item})
        samples = []
        for _ in range(21):  # the median: one collector pause must not become the figure
            start = time.perf_counter()
            plan_replay(state, max_items=1000, max_tokens=10**9)
            samples.append(time.perf_counter() - start)
        results[count] = float(np.median(samples) * 1000)
    return results


_ECHO = """
import socket, sys
echo = socket.socket(fileno=int(sys.argv[1]))
while data := echo.recv(64):
    echo.send(data)
"""


def wakeup_floor(rounds: int, gap_s: float) -> dict[str, float]:
    """Round trips of one byte to an echo process on the proxies' core, from this one.

    Any proxy on its own core pays this: the frame crosses to a core that was idle and back. On
    a virtual machine waking an idle vCPU costs far more than on bare metal, and it sets the floor
    under every proxy's added latency in this benchmark, the relay's and nginx's alike.
    """
    import socket
    import subprocess
    import sys

    from bench.servers import pin

    mine, theirs = socket.socketpair()
    echo = subprocess.Popen(
        [*pin(0), sys.executable, "-c", _ECHO, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
    )
    theirs.close()
    times: list[float] = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            mine.send(b"x")
            mine.recv(64)
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(gap_s)  # long enough for the other core to go idle, as between frames
    finally:
        mine.close()
        echo.wait(10)
    values = np.array(times)
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 99, 99.9)}
