"""What each tracked event costs in the loaded relay: ``python -m bench.event_times``.

The lanes take the appends and the streaming answer in C; every other frame (a commit, a
``response.done``, the items of a turn) goes through the conversation's full path in Python, a
few each turn, found cold in the caches after the hundreds of lane frames between two turns. A
profiler cannot say what one of them costs there: py-spy samples too coarsely for events this
rare, cProfile's overhead changes the answer, and perf does not see Python functions. So this
times them in place: a relay process whose two full-path entry points
(``Conversation.on_client_message`` and ``Conversation.on_upstream_text``) are wrapped with a
clock, under the main comparison's load (100 voice sessions, a turn every 3 s), with the time
per event type written when the process exits and set against the CPU the relay used.

``BENCH_EVENT_TIMES=FILE`` makes ``bench.servers.start_relay`` start such a relay for any other
benchmark; ``python -m bench.event_times --serve FILE`` is that process.
"""

from __future__ import annotations

import argparse
import atexit
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from relay.io.frames import event_type_of

CLIENT, SERVER = "client", "server"


def install(out: Path) -> None:
    """Wrap the full path's two entry points with a clock; the times go to ``out`` at exit."""
    from relay.io.conversation import Conversation

    times: dict[str, list[int]] = defaultdict(list)
    clock = time.perf_counter_ns

    def timed(direction: str, method: Callable[..., None]) -> Callable[..., None]:
        def wrapper(self: Any, first: Any, data: bytes) -> None:
            started = clock()
            try:
                method(self, first, data)
            finally:
                elapsed = clock() - started
                times[f"{direction} {event_type_of(data)[0]}"].append(elapsed)

        return wrapper

    Conversation.on_client_message = timed(CLIENT, Conversation.on_client_message)  # type: ignore[method-assign]
    Conversation.on_upstream_text = timed(SERVER, Conversation.on_upstream_text)  # type: ignore[method-assign]
    atexit.register(lambda: out.write_bytes(orjson.dumps(times)))


def serve(out: Path) -> None:
    install(out)
    from relay.cli import main

    sys.exit(main(["serve"]))


def table(times: dict[str, list[int]], cpu_s: float, turns: int) -> str:
    """Per event type: how many, what one costs (median, p90), and their share of the CPU."""
    import numpy as np

    lines = [
        "| event | count | median us | p90 us | per turn us | share of the relay's CPU |",
        "|---|---|---|---|---|---|",
    ]
    total_s = 0.0
    for key, values in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        spent = sum(values) / 1e9
        total_s += spent
        lines.append(
            f"| {key} | {len(values)} | {np.median(values) / 1000:.1f} | "
            f"{np.percentile(values, 90) / 1000:.1f} | {sum(values) / 1000 / max(turns, 1):.0f} | "
            f"{spent / cpu_s:.1%} |"
        )
    lines.append(
        f"| all full-path events | {sum(len(v) for v in times.values())} | | | "
        f"{total_s * 1e6 / max(turns, 1):.0f} | {total_s / cpu_s:.1%} |"
    )
    return "\n".join(lines)


async def measure(sessions: int, duration: float, out: Path) -> float:
    """The main comparison's load through one timed relay, whose times go to ``out`` as it
    exits; returns the CPU it used under the load.
    (The load's modules are imported here: the timed relay process needs none of them.)"""
    from bench.load import Stamps
    from bench.runner import simulator_config, voice_sessions
    from bench.servers import cpu_times, start_relay
    from relay.simulator.server import start_simulator

    clock = Stamps()
    runner, sim_port = await start_simulator(simulator_config({"clock": clock}))
    relay = await start_relay(sim_port, event_times=str(out))
    try:
        before = sum(cpu_times(relay.proc.pid))
        url = f"ws://127.0.0.1:{relay.port}/v1/realtime?model=gpt-realtime"
        await voice_sessions(url, clock, sessions, duration)
        return sum(cpu_times(relay.proc.pid)) - before
    finally:
        relay.stop()
        await runner.cleanup()


def read(out: Path) -> tuple[dict[str, list[int]], int]:
    """The times a timed relay wrote, and the turns among them (one client commit each)."""
    times: dict[str, list[int]] = orjson.loads(out.read_bytes())
    return times, len(times.get(f"{CLIENT} input_audio_buffer.commit", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.event_times", description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--serve", metavar="FILE", help="be the timed relay, writing to FILE at exit")
    args = parser.parse_args(argv)
    if args.serve:
        serve(Path(args.serve))
    import tempfile

    import uvloop

    out = Path(tempfile.mkdtemp(prefix="relay-event-times-")) / "times.json"
    cpu_s = uvloop.run(measure(args.sessions, args.duration, out))
    times, turns = read(out)
    print(f"{args.sessions} sessions, {args.duration:.0f} s, {turns} turns, relay CPU {cpu_s:.2f} s\n")
    print(table(times, cpu_s, turns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
