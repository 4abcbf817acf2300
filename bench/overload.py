"""Graceful overload: voice apps offered at twice what one relay core can carry.

Apps arrive at a steady rate (``arrival_per_s``), each trying to open a session on a relay that
refuses new sessions past a share of its core (``RELAY_OVERLOAD_CPU_PERCENT``). An admitted app
streams at once, as in the main comparison (a 20 ms append every 20 ms, a spoken answer every
3 s); a refused one goes elsewhere, as behind a load balancer (a first version retried after
its ``Retry-After``: the retries of hundreds of refused apps loaded the generator's own core,
whose delays then showed as the relay's). Once ``offered`` apps have arrived, the admitted ones
are measured for ``duration`` seconds while arrivals go on at the same rate; the caller measures
the direct path with as many sessions, so the relay's added latency is the difference.

A refusal is *clean* when it is an HTTP 503 with ``Retry-After`` before any WebSocket exists;
anything else a refused app sees (a reset, a timeout, another status) is counted as not clean.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.audio import speech_like
from bench.load import Driver, Schedule, Stamps, VoiceApp, collector_paused, open_app, own_stalls, settle
from bench.servers import TOKEN, metric, start_relay

APPEND_S = 0.02
TURN_EVERY_S = 3.0
_GOLDEN = 0.6180339887498949  # successive multiples, mod 1, fill the interval evenly
_PLASTIC = 0.7548776662466927  # the same for turns, not in step with the appends' phases
_MARKER = b'"response.output_audio.delta"'
_UPDATE = b'{"type":"session.update","session":{"type":"realtime","audio":{"input":{"turn_detection":null}}}}'
_TURN = (b'{"type":"input_audio_buffer.commit"}', b'{"type":"response.create"}')


@dataclass
class Refusals:
    clean: int = 0  # 503 with Retry-After
    other: list[str] = field(default_factory=list)  # what the others were

    def record(self, head: str, error: BaseException) -> None:
        """One refused attempt."""
        lines = head.split("\r\n")
        status = lines[0].split(" ")[1] if lines and len(lines[0].split(" ")) > 1 else ""
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        retry = headers.get("retry-after", "")
        if status == "503" and retry.isdigit():
            self.clean += 1
        else:
            self.other.append(lines[0] if head else repr(error))


async def _arrive(url: str, driver: Driver, refusals: Refusals) -> None:
    """One app: admitted, it streams at once; refused, it goes elsewhere."""
    app = VoiceApp(driver.stamps, _MARKER)
    try:
        await open_app(url, app.stamps, {"Authorization": f"Bearer {TOKEN}"}, _MARKER, app)
    except (ConnectionError, OSError, TimeoutError) as exc:
        refusals.record(app.refusal, exc)
        return
    app.send(_UPDATE)
    now, index = asyncio.get_running_loop().time(), len(driver.apps)
    # Apps arrive on a fixed beat (every 100 ms at 10 a second: a multiple of the 20 ms append
    # period), so starting each at its arrival would put every append in the same millisecond
    # and measure that burst, not the path. Each starts at its own phase, spread evenly.
    # Turns alike: on ten phases of the arrival beat, ~6 of 200 apps committed and asked for an
    # answer in the same millisecond every 100 ms, and the answers' events queued the frames
    # behind them (the row's tail came from that burst). Spread evenly over a turn's period too.
    phase = (index * _GOLDEN) % 1.0 * APPEND_S
    turn = (index * _PLASTIC) % 1.0 * TURN_EVERY_S
    driver.add(app, now + 0.05 + phase, now + TURN_EVERY_S / 2 + turn)


def _appender() -> Callable[[int, int], tuple[str, bytes]]:
    chunk = base64.b64encode(speech_like(20)).decode()

    def append(index: int, seq: int) -> tuple[str, bytes]:
        key = f"bo{index}x{seq}"
        return key, f'{{"type":"input_audio_buffer.append","event_id":"{key}","audio":"{chunk}"}}'.encode()

    return append


async def _arrivals(
    url: str, driver: Driver, refusals: Refusals, per_s: float, until: float, tasks: list[asyncio.Task[None]]
) -> None:
    loop = asyncio.get_running_loop()
    begin = loop.time()
    while (when := begin + len(tasks) / per_s) < until:
        await asyncio.sleep(max(0.0, when - loop.time()))
        tasks.append(asyncio.create_task(_arrive(url, driver, refusals)))


async def overload(
    sim_port: int,
    current: dict[str, Stamps],
    *,
    offered: int,
    arrival_per_s: float,
    duration: float,
    cpu_percent: float = 85.0,
) -> dict[str, Any]:
    """Offer ``offered`` apps (then more, at the same rate, while measuring) to a relay on its
    own core; measure the admitted ones."""
    relay = await start_relay(
        sim_port, extra={"RELAY_OVERLOAD_CPU_PERCENT": str(cpu_percent), "RELAY_OVERLOAD_LAG_MS": "50"}
    )
    import psutil

    process = psutil.Process(relay.proc.pid)
    loop = asyncio.get_running_loop()
    ramp = Stamps()
    current["clock"] = ramp
    driver = Driver(Schedule(APPEND_S, TURN_EVERY_S, math.inf), _appender(), ramp, _TURN)
    refusals = Refusals()
    url = f"ws://127.0.0.1:{relay.port}/v1/realtime?model=gpt-realtime"
    begin = loop.time()
    arrived_by = begin + offered / arrival_per_s
    measured_from = arrived_by + 2.0  # the last arrivals' sessions settle
    end = measured_from + duration
    runner = asyncio.create_task(driver.run(end))
    arrivals: list[asyncio.Task[None]] = []
    arriving = asyncio.create_task(_arrivals(url, driver, refusals, arrival_per_s, end, arrivals))
    try:
        await asyncio.sleep(max(0.0, measured_from - loop.time()))
        # What the relay itself reports, read as the window opens and as it closes, not during
        # it: a scrape a second cost the load side (this process) a few milliseconds each, and
        # the frames it held meanwhile were stamped as the relay's delay.
        seen = [await relay.metrics()]
        stalls: list[tuple[float, float]] = []
        with collector_paused():
            measured = Stamps()
            current["clock"] = measured
            driver.measure_into(measured)
            admitted_at_start, refused_before = len(driver.apps), refusals.clean
            cpu = process.cpu_times()
            window_from = time.perf_counter()
            watching = asyncio.create_task(own_stalls(stalls))
            await asyncio.wait([runner])
            watching.cancel()
            cpu_after = process.cpu_times()
            seen.append(await relay.metrics())
            share = (cpu_after.user + cpu_after.system - cpu.user - cpu.system) / duration
            await settle(measured)
    finally:
        runner.cancel()
        arriving.cancel()
        for task in arrivals:
            task.cancel()
        await asyncio.gather(runner, arriving, *arrivals, return_exceptions=True)
        for app in driver.apps:
            app.close()
        if driver.apps:
            await asyncio.wait([asyncio.ensure_future(app.closed) for app in driver.apps], timeout=10)
        relay.stop()
    return {
        "offered": len(arrivals),
        "admitted": admitted_at_start,
        "admitted_during_measurement": len(driver.apps) - admitted_at_start,
        "refused_clean": refusals.clean,
        "refused_while_measured": refusals.clean - refused_before,
        "relay_cpu_share_seen": [round(metric(text, "relay_cpu_share"), 3) for text in seen],
        "relay_lag_ms_seen": [round(metric(text, "relay_event_loop_lag_seconds") * 1000, 1) for text in seen],
        "relay_gc_while_measured": _gc_between(seen[0], seen[-1]),
        "refused_other": len(refusals.other),
        "refused_other_examples": refusals.other[:5],
        "relay_core_share": share,
        "load_stalls_ms": [(round(at - window_from, 2), round(ms, 1)) for at, ms in stalls],
        "p99_per_second": _p99_per_second(measured),
        "p99_steady_seconds": p99_steady_seconds(measured, stalls),
        "cpu_percent": cpu_percent,
        "rate": arrival_per_s,
        "stamps": measured,
    }


def _gc_between(first: str, last: str) -> dict[str, tuple[int, float]]:
    """The relay's collections between two scrapes, per generation: how many, seconds in all."""

    def grew(name: str) -> float:
        return metric(last, name) - metric(first, name)

    return {
        g: (
            int(grew(f'relay_gc_pause_seconds_count{{generation="{g}"}}')),
            round(grew(f'relay_gc_pause_seconds_sum{{generation="{g}"}}'), 4),
        )
        for g in "012"
    }


def _by_second(stamps: Stamps) -> dict[int, tuple[list[float], list[float]]]:
    """Each frame's one-way latency (ms), c2u and u2c, by the second of the window it was sent in
    (every second a frame was sent in has its entry)."""
    begin = min(stamps.c2u_sent.values(), default=0.0)
    seconds: dict[int, tuple[list[float], list[float]]] = {}
    for i, (sent, recv) in enumerate(
        ((stamps.c2u_sent, stamps.c2u_recv), (stamps.u2c_sent, stamps.u2c_recv))
    ):
        received = recv.mapping()
        for key, at in sent.items():
            latencies = seconds.setdefault(int(at - begin), ([], []))[i]
            if key in received:
                latencies.append((received[key] - at) * 1000)
    return seconds


def p99_steady_seconds(stamps: Stamps, stalls: list[tuple[float, float]]) -> dict[str, float]:
    """The relay's p99 over the window's whole seconds in which the load process did not stop
    (no stall of its own overlapped the second in which a frame was sent): a second the load
    side lost says nothing about the relay. The report gives it beside the whole window's p99,
    which stays the verdict."""
    import numpy as np

    begin = min(stamps.c2u_sent.values(), default=0.0)
    lost: set[int] = set()
    for at, ms in stalls:
        lost.update(range(int(at - ms / 1000 - begin), int(at - begin) + 1))
    seconds = _by_second(stamps)
    kept = [(c2u, u2c) for second, (c2u, u2c) in seconds.items() if second not in lost]
    c2u_kept = [ms for c2u, _ in kept for ms in c2u]
    u2c_kept = [ms for _, u2c in kept for ms in u2c]
    return {
        "c2u": float(np.percentile(c2u_kept, 99)) if c2u_kept else math.nan,
        "u2c": float(np.percentile(u2c_kept, 99)) if u2c_kept else math.nan,
        "seconds": len(kept),
        "of": len(seconds),
    }


def _p99_per_second(stamps: Stamps) -> list[str]:
    """Where in the window the slow frames were: a burst, or all along."""
    import numpy as np

    return [
        f"{second}: {np.percentile(c2u, 99) if c2u else 0:.1f} / {np.percentile(u2c, 99) if u2c else 0:.1f}"
        for second, (c2u, u2c) in sorted(_by_second(stamps).items())
    ]


def main(argv: list[str] | None = None) -> int:
    """The overload row alone: ``python -m bench.overload --offered 1500 --cpu-percent 40``."""
    import argparse
    import os

    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    parser.add_argument(
        "--offered", type=int, default=1500, help="apps offered before measuring (~2x a core here)"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="apps arriving per second")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--cpu-percent", type=float, default=40.0)  # the benchmark's (bench/runner.py)
    parser.add_argument("--save", help="also pickle the row here (the full benchmark reads it)")
    args = parser.parse_args(argv)
    if args.offered < 1:
        parser.error("--offered must be at least 1")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # as the benchmark: the load side on core 1, the relay on 0
    import uvloop

    from bench.report import overload_lines
    from bench.runner import overload_row

    results = uvloop.run(overload_row(args.offered, args.rate, args.duration, args.cpu_percent))
    if args.save:
        import pickle
        from pathlib import Path

        Path(args.save).write_bytes(pickle.dumps(results))
    print("\n".join(overload_lines({"overload": results})))
    print(
        "garbage collections while measured (count, seconds) by generation",
        results["relay_gc_while_measured"],
    )
    print(
        f"admitted while measured {results['admitted_during_measurement']}; relay lag readings (ms) "
        f"{results['relay_lag_ms_seen']}; CPU readings {results['relay_cpu_share_seen']}"
    )
    return 0 if results["relay"].lost + results["direct"].lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
