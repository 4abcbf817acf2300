"""The benchmark: realistic voice sessions through the relay, nginx, and directly, side by side.

One clock for every measurement: the simulator runs inside this process, so the time a client
frame reaches it and the time it sends a server frame are stamped on the same monotonic clock
as the load generator's sends and receives. The relay (and nginx) run as their own processes,
pinned to core 0 when ``taskset`` exists, with this process on core 1.

Per path and direction it reports p50 / p99 / p99.9 one-way latency; the relay's and nginx's
*added* latency is the difference from the direct path's percentiles. It also reports relay
CPU seconds per 1000 frames, RSS per idle session, and frames lost (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import math
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import websockets

from bench.audio import speech_like
from bench.floor import NAME as FLOOR  # bench/floor.py: this I/O design with no work per frame
from bench.load import Schedule, Stamps, VoiceApp, collector_paused, drive, open_app, own_stalls, settle
from bench.micro import replay_micro, validation_micro, wakeup_floor
from bench.overload import overload
from bench.real_conditions import open_mic_rss, rotation_under_open_mics
from bench.resume import run_all as resume_run_all
from bench.servers import TOKEN, Proc, cpu_times, start_floor, start_nginx, start_relay
from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing

APPEND_MS = 20
TURN_EVERY_S = 3.0
PYTHON_BUILD = "relay (pure Python)"


Clock = Stamps  # one path's stamps: the simulator's probe and the generator write into it


# ---------------------------------------------------------------------------------- load
async def voice_sessions(
    url: str,
    clock: Clock,
    count: int,
    duration: float,
    *,
    beta: bool = False,
    turns: bool = True,
    tag: str = "",
    steady: Callable[[], None] | None = None,
) -> None:
    """``count`` apps: each appends every 20 ms; every few seconds commits and asks for an answer.

    ``steady`` is called when every app is open and configured, and again when the last frame
    has arrived: what the proxy spends between the two calls is its cost per frame in steady
    state, apart from opening and closing sessions.
    """
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if beta:
        headers["OpenAI-Beta"] = "realtime=v1"
        update = b'{"type":"session.update","session":{"turn_detection":null}}'
    else:
        update = (
            b'{"type":"session.update","session":{"type":"realtime",'
            b'"audio":{"input":{"turn_detection":null}}}}'
        )
    marker = b'"response.audio.delta"' if beta else b'"response.output_audio.delta"'
    apps = await asyncio.gather(*(_open(url, clock, headers, marker, i) for i in range(count)))
    for app in apps:
        app.send(update)
    chunk = base64.b64encode(speech_like(APPEND_MS)).decode()

    def append(index: int, seq: int) -> tuple[str, bytes]:
        key = f"b{tag}{index}x{seq}"  # the tag keeps ids unique when rounds share a clock
        return key, f'{{"type":"input_audio_buffer.append","event_id":"{key}","audio":"{chunk}"}}'.encode()

    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.1
    # Apps are not synchronised: spread their 20 ms ticks evenly over the period.
    starts = [begin + APPEND_MS / 1000 * i / count for i in range(count)]
    schedule = Schedule(APPEND_MS / 1000, TURN_EVERY_S, duration, turns)
    turn = (b'{"type":"input_audio_buffer.commit"}', b'{"type":"response.create"}')
    with collector_paused():
        if steady:
            steady()
        await drive(apps, starts, schedule, append, clock, turn)
        await settle(clock)  # let frames in flight and the last responses arrive
        if steady:
            steady()
    for app in apps:
        app.close()
    await asyncio.wait([asyncio.ensure_future(app.closed) for app in apps], timeout=10)


async def _open(url: str, clock: Clock, headers: dict[str, str], marker: bytes, index: int) -> VoiceApp:
    await asyncio.sleep(index * 0.005)  # ramp up: hundreds of simultaneous handshakes would time out
    return await open_app(url, clock, headers, marker)


# ---------------------------------------------------------------------------------- servers
@dataclass
class PathResult:
    path: str
    sessions: int
    c2u: np.ndarray
    u2c: np.ndarray
    lost: int
    frames: int
    cpu_s: float | None = None
    cores: float | None = None  # the proxy's CPU seconds per second of load: share of its core
    # Of cpu_s, what the proxy spent while every session was open (the rest: opening and closing).
    steady_cpu_s: float | None = None

    def open_close_ms(self) -> float | None:
        """CPU per session opened and closed (connections, handshakes, set-up, teardown)."""
        if self.cpu_s is None or self.steady_cpu_s is None or not self.sessions:
            return None
        return (self.cpu_s - self.steady_cpu_s) / self.sessions * 1000

    def pct(self, direction: str, q: float) -> float:
        values = self.c2u if direction == "c2u" else self.u2c
        return float(np.percentile(values, q)) if len(values) else math.nan


async def run_path(
    path: str,
    url: str,
    sessions: int,
    duration: float,
    clock: Clock,
    cpu_pid: int | None = None,
    *,
    beta: bool = False,
    turns: bool = True,
) -> PathResult:
    cpu_before = _cpu(cpu_pid)
    await voice_sessions(url, clock, sessions, duration, beta=beta, turns=turns)
    cpu = _cpu(cpu_pid) - cpu_before if cpu_pid else None
    return _result(path, sessions, clock, cpu)


def _result(path: str, sessions: int, clock: Clock, cpu: float | None) -> PathResult:
    frames = len(clock.c2u_sent) + len(clock.u2c_sent)
    return PathResult(
        path, sessions, clock.latencies("c2u"), clock.latencies("u2c"), clock.lost(), frames, cpu
    )


@dataclass
class Target:
    name: str
    url: str
    pid: int | None  # whose CPU is measured (None: the direct path has no proxy)


class _Watch:
    """The load process's own stalls over a round's measured window only (between the two
    ``steady`` marks): the ramp's handshakes and the collection after the window stop this
    process too, but no measured frame is in flight then."""

    def __init__(self, into: list[tuple[float, float]] | None) -> None:
        self.into = into
        self.task: asyncio.Task[None] | None = None

    def toggle(self) -> None:
        if self.into is None:
            return
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(own_stalls(self.into))
        else:
            self.stop()
            self.into = None  # one window per round

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


async def compare(
    targets: list[Target],
    sessions: int,
    duration: float,
    trials: int,
    current: dict[str, Clock],
    stalls: dict[str, list[tuple[float, float]]] | None = None,
) -> dict[str, PathResult]:
    """The same load on every target, in interleaved rounds, each path's samples pooled.

    This machine's speed drifts between runs; rounds that alternate direct, nginx and relay
    expose all three to the same drift, so their differences stay meaningful. ``stalls``: the
    load process's own stalls in each target's rounds (``bench.load.own_stalls``).
    """
    clocks = {t.name: Clock() for t in targets}
    cpu = dict.fromkeys(clocks, 0.0)
    steady = dict.fromkeys(clocks, 0.0)
    for trial in range(trials):
        for target in targets:
            current["clock"] = clocks[target.name]
            marks: list[float] = []
            before = _cpu(target.pid)
            watch = _Watch(stalls.setdefault(target.name, []) if stalls is not None else None)

            def mark(pid: int | None = target.pid, watch: _Watch = watch) -> None:
                marks.append(_cpu(pid))  # noqa: B023 (called within this round)
                watch.toggle()

            await voice_sessions(
                target.url, clocks[target.name], sessions, duration, tag=f"{trial}.", steady=mark
            )
            watch.stop()
            cpu[target.name] += _cpu(target.pid) - before
            steady[target.name] += marks[1] - marks[0]
    results = {}
    for t in targets:
        result = _result(t.name, sessions, clocks[t.name], cpu[t.name] if t.pid else None)
        result.cores = cpu[t.name] / (duration * trials) if t.pid else None
        result.steady_cpu_s = steady[t.name] if t.pid else None
        results[t.name] = result
    return results


async def hot_path_of_build(*, python: bool) -> dict[str, Any]:
    """``bench/hotpath.py`` in a process of its own, on the compiled build or the pure-Python one."""
    env = {k: v for k, v in os.environ.items() if k != "RELAY_NO_EXTENSIONS"}
    if python:
        env["RELAY_NO_EXTENSIONS"] = "1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.hotpath", "--json", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    result: dict[str, Any] = orjson.loads(out)
    return result


def _cpu(pid: int | None) -> float:
    return 0.0 if pid is None else sum(cpu_times(pid))


async def idle_rss_per_session(sim_port: int, count: int) -> float:
    """Bytes of RSS per idle open session (connected, nothing flowing), on a fresh relay process:
    one that already served the load has free heap that would hide the cost."""
    relay = await start_relay(sim_port)
    try:
        return await _idle_rss(relay, count)
    finally:
        relay.stop()


async def _idle_rss(relay: Proc, count: int) -> float:
    import psutil

    process = psutil.Process(relay.proc.pid)
    url = f"ws://127.0.0.1:{relay.port}/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    warm = [await websockets.connect(url, additional_headers=headers) for _ in range(5)]
    before = process.memory_info().rss
    conns = [await websockets.connect(url, additional_headers=headers) for _ in range(count)]
    for conn in conns:
        await conn.recv()
    await asyncio.sleep(0.5)
    after = process.memory_info().rss
    for conn in conns + warm:
        await conn.close()
    return float(after - before) / count


def simulator_config(current: dict[str, Clock]) -> SimulatorConfig:
    """The throughput runs' simulator: it stamps each frame into ``current["clock"]``."""
    return SimulatorConfig(
        speed=1.0,
        reply_text="Here is a short spoken answer.",
        # The throughput comparisons time single frames one way; acknowledgement delays would only
        # shift when answers start. The real-conditions runs keep the live API's timing.
        timing=Timing.fast(),
        probe=lambda kind, frame: current["clock"].probe(kind, frame),
    )


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    current: dict[str, Clock] = {"clock": Clock()}  # where the simulator's probe writes now
    runner, sim_port = await start_simulator(simulator_config(current))
    gc.freeze()  # the harness's own heap (imports, servers) need not be traversed by every collection
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    relay = await start_relay(sim_port)
    # The pure-Python build beside the compiled one (relay/core/speedups.py), in the main run only.
    relay_py = await start_relay(sim_port, extra={"RELAY_NO_EXTENSIONS": "1"}) if args.python_build else None
    nginx = await start_nginx(sim_port, workdir)
    floor = await start_floor(sim_port) if args.floor else None
    results: dict[str, Any] = {"paths": [], "sweep": [], "sweep_stalls": [], "skipped": []}
    try:
        results["wakeup_floor"] = await asyncio.to_thread(wakeup_floor, args.floor_rounds, 0.01)
        url = "ws://127.0.0.1:{}/v1/realtime?model=gpt-realtime"
        targets = [Target("direct", url.format(sim_port), None)]
        if nginx:
            targets.append(Target("nginx", url.format(nginx.port), nginx.proc.pid))
        targets.append(Target("relay", url.format(relay.port), relay.proc.pid))
        both = [Target(PYTHON_BUILD, url.format(relay_py.port), relay_py.proc.pid)] if relay_py else []
        if floor:
            both.append(Target(FLOOR, url.format(floor.port), floor.proc.pid))
        main = await compare(targets + both, args.sessions, args.duration, args.trials, current)
        results["paths"] = list(main.values())
        if args.profile:  # where each proxy's CPU per frame goes, one more round each under perf
            results["profile"] = await _profile(targets + both, args, current)
        deadline = time.monotonic() + args.budget
        for count in args.sweep:
            # One step costs about (duration + ramp + settle) per path and trial, and start-up.
            step = len(targets) * args.trials * (args.sweep_duration + count * 0.005 + 3) + 5
            if time.monotonic() + step > deadline:
                results["skipped"].append(count)
                continue
            paths, stalls = await sweep_step_apart(
                count, args.sweep_duration, args.trials, nginx=nginx is not None
            )
            results["sweep"].append((count, paths))
            results["sweep_stalls"].append(stalls)
        if args.overload_offered:
            results["overload"] = await overload_apart(args, main["relay"])
        current["clock"] = Clock()
        results["beta"] = await run_path(
            "relay (beta client)",
            targets[-1].url,
            args.sessions,
            args.duration,
            current["clock"],
            relay.proc.pid,
            beta=True,
        )
        results["rotation"] = [
            await rotation_under_open_mics(set_up, args.rotation_sessions, args.rotation_duration, 3.0)
            for set_up in args.rotation_set_up_ms
        ]
        results["open_mic"] = await open_mic_rss(args.open_mic_sessions, args.open_mic_duration)
        if args.resume_conversations:  # 0: left out (the harness's smoke test runs it apart)
            results["resume"] = await resume_run_all(
                args.resume_conversations,
                args.resume_drained,
                args.resume_cost_sessions,
                args.resume_cost_seconds,
                args.trials,
                args.resume_speed,
            )
        results["rss_per_session"] = await idle_rss_per_session(sim_port, args.idle_sessions)
        results["validation"] = validation_micro()
        results["replay_ms"] = replay_micro()
        # Each build in a fresh process of its own, one after the other: in this one, the load
        # generator's heap and the simulator would make the first figure incomparable.
        results["hot_path"] = await hot_path_of_build(python=False)
        if args.python_build:
            results["hot_path_python"] = await hot_path_of_build(python=True)
        results["nginx"] = nginx is not None
    finally:
        relay.stop()
        if relay_py:
            relay_py.stop()
        if floor:
            floor.stop()
        if nginx:
            nginx.stop()
        await runner.cleanup()
    return results


async def _profile(
    targets: list[Target], args: argparse.Namespace, current: dict[str, Clock]
) -> dict[str, Any]:
    from bench.profile import perf_unusable, profile_round

    if reason := await asyncio.to_thread(perf_unusable):
        return {"skipped": reason}
    chosen = [t for t in targets if t.pid is not None and t.name in ("nginx", "relay", FLOOR)]
    splits = [
        await profile_round(t.name, t.pid, t.url, args.sessions, args.duration, current)  # type: ignore[arg-type]
        for t in chosen
    ]
    return {"splits": splits}


async def _apart(module: str, *options: str) -> Any:
    """A benchmark row in a load process and simulator of its own (``python -m <module>``), read
    back from the pickle it saves: run in this process after the rows before it, a row of
    hundreds of sessions met a load side that stalled of itself (the overload row: 27 stalls up
    to 25 ms in one window of the fourteenth stop's second full run; the sweep's 400 sessions:
    a direct-path p99.9 of 16 ms in the fifteenth stop's first) and charged the stalls to the
    proxy measured; the same rows in fresh processes did not (docs/benchmark.md)."""
    with tempfile.TemporaryDirectory(prefix="relay-row-") as folder:
        saved = Path(folder) / "row.pickle"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *options, f"--save={saved}", stdout=asyncio.subprocess.DEVNULL
        )
        await proc.wait()
        if not saved.exists():
            raise RuntimeError(f"{module} ended with {proc.returncode} and saved nothing")
        return pickle.loads(saved.read_bytes())  # written by our own child


async def sweep_step_apart(
    count: int, duration: float, trials: int, *, nginx: bool
) -> tuple[dict[str, PathResult], dict[str, list[tuple[float, float]]]]:
    """One step of the sweep on its own simulator, relay and nginx (``python -m bench.sweep``)."""
    options = [f"--count={count}", f"--duration={duration}", f"--trials={trials}"]
    return await _apart("bench.sweep", *options, *([] if nginx else ["--no-nginx"]))  # type: ignore[no-any-return]


async def sweep_step(
    count: int, duration: float, trials: int, *, nginx: bool
) -> tuple[dict[str, PathResult], dict[str, list[tuple[float, float]]]]:
    """Direct, nginx and a fresh relay at ``count`` sessions, with the load process's own stalls."""
    current: dict[str, Clock] = {"clock": Clock()}
    runner, sim_port = await start_simulator(simulator_config(current))
    gc.freeze()
    workdir = Path(tempfile.mkdtemp(prefix="relay-sweep-"))
    url = "ws://127.0.0.1:{}/v1/realtime?model=gpt-realtime"
    stalls: dict[str, list[tuple[float, float]]] = {}
    servers: list[Proc] = []
    try:
        servers.append(relay := await start_relay(sim_port))
        targets = [Target("direct", url.format(sim_port), None)]
        if nginx and (proxy := await start_nginx(sim_port, workdir)):
            servers.append(proxy)
            targets.append(Target("nginx", url.format(proxy.port), proxy.proc.pid))
        targets.append(Target("relay", url.format(relay.port), relay.proc.pid))
        paths = await compare(targets, count, duration, trials, current, stalls)
    finally:
        for server in servers:
            server.stop()
        await runner.cleanup()
    return paths, stalls


async def overload_apart(args: argparse.Namespace, relay: PathResult) -> dict[str, Any]:
    """The overload row (``python -m bench.overload``) at twice a core's capacity."""
    offered = args.overload_offered
    if offered < 0:
        offered = round(2 * relay.sessions / relay.cores) if relay.cores else 2 * args.sessions
    options = [f"--offered={offered}", f"--rate={args.overload_rate}", f"--duration={args.duration}"]
    return await _apart("bench.overload", *options, f"--cpu-percent={args.overload_cpu_percent}")  # type: ignore[no-any-return]


async def _overload(
    args: argparse.Namespace, sim_port: int, current: dict[str, Clock], direct_url: str
) -> dict[str, Any]:
    """``offered`` apps offered to a relay with admission control; the direct path with as many
    sessions as it admitted, for the difference."""
    result = await overload(
        sim_port,
        current,
        offered=args.overload_offered,
        arrival_per_s=args.overload_rate,
        duration=args.duration,
        cpu_percent=args.overload_cpu_percent,
    )
    result["relay"] = _result("relay", result["admitted"], result.pop("stamps"), None)
    current["clock"] = Clock()
    result["direct"] = await run_path(
        "direct", direct_url, result["admitted"], args.duration, current["clock"]
    )
    return result


async def overload_row(offered: int, rate: float, duration: float, cpu_percent: float) -> dict[str, Any]:
    """The overload row on its own simulator (``python -m bench.overload``)."""
    current: dict[str, Clock] = {"clock": Clock()}
    runner, sim_port = await start_simulator(simulator_config(current))
    gc.freeze()
    args = argparse.Namespace(
        overload_offered=offered, overload_rate=rate, duration=duration, overload_cpu_percent=cpu_percent
    )
    direct = f"ws://127.0.0.1:{sim_port}/v1/realtime?model=gpt-realtime"
    try:
        return await _overload(args, sim_port, current, direct)
    finally:
        await runner.cleanup()


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="relay bench", description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument(
        "--sweep", type=lambda s: [int(x) for x in s.split(",") if x], default=[10, 50, 100, 200, 400]
    )
    parser.add_argument("--sweep-duration", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=2, help="interleaved rounds per comparison")
    parser.add_argument(
        "--budget", type=float, default=900.0, help="seconds for the sweep; larger counts are skipped"
    )
    parser.add_argument("--idle-sessions", type=int, default=500)
    parser.add_argument("--rotation-sessions", type=int, default=20, help="open microphones, rotating")
    parser.add_argument("--rotation-duration", type=float, default=30.0)
    parser.add_argument(
        "--rotation-set-up-ms",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[300.0, 1000.0],
        help="the upstream's session set-up times to rotate under",
    )
    parser.add_argument("--open-mic-sessions", type=int, default=40)
    parser.add_argument("--open-mic-duration", type=float, default=30.0)
    parser.add_argument(
        "--floor-rounds", type=int, default=2000, help="cross-core round trips timed for the latency floor"
    )
    parser.add_argument("--resume-conversations", type=int, default=20, help="cut and resumed, each way")
    parser.add_argument("--resume-drained", type=int, default=100, help="moved by a drain")
    parser.add_argument("--resume-cost-sessions", type=int, default=20, help="open mics, Redis cost")
    parser.add_argument("--resume-cost-seconds", type=float, default=15.0)
    parser.add_argument("--resume-cost-trials", type=int, default=2, help="with/without Redis rounds")
    parser.add_argument("--resume-speed", type=float, default=1.0, help="simulator speed (1 = live)")
    parser.add_argument(
        "--overload-offered",
        type=int,
        default=-1,
        help="apps offered before the overload measurement (-1: twice the relay's core capacity, 0: skip)",
    )
    parser.add_argument("--overload-rate", type=float, default=10.0, help="apps arriving per second")
    parser.add_argument(
        "--overload-cpu-percent",
        type=float,
        default=40.0,
        # Where admission is set decides how busy the admitted sessions keep the core. On this
        # machine kind the relay's tail rises past ~0.6 of a core (bursts of the offered traffic
        # queue behind each other), and admission at 50% landed at 0.46-0.66 as the machine's
        # speed drifted after it: met in some runs, 9-46 ms in others (docs/benchmark.md). At 40%
        # it holds; the report says the threshold, and `--overload-cpu-percent` measures others.
        help="the relay's admission threshold (CPU percent of its core)",
    )
    parser.add_argument(
        "--no-python-build",
        dest="python_build",
        action="store_false",
        help="leave out the pure-Python build's row (RELAY_NO_EXTENSIONS) beside the compiled one",
    )
    parser.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="leave out the forward-only relay's row (bench/floor.py: the architecture's floor)",
    )
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="leave out the perf split of each proxy's CPU per frame (bench/profile.py)",
    )
    parser.add_argument("--quick", action="store_true", help="10 sessions, 5 s, no sweep")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.duration, args.sweep, args.idle_sessions, args.trials = 10, 5.0, [], 50, 1
        args.floor_rounds = 200
        args.rotation_sessions, args.rotation_duration = 5, 10.0
        args.open_mic_sessions, args.open_mic_duration = 10, 6.0
        args.resume_conversations, args.resume_drained, args.resume_cost_seconds = 5, 20, 5.0
        args.overload_offered = 20
    from bench.report import write_report

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # generator and simulator on core 1; the proxies get core 0
    try:  # the load generator and simulator share a core: give them the faster event loop
        import uvloop

        results = uvloop.run(benchmark(args))
    except ImportError:
        results = asyncio.run(benchmark(args))
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    table = write_report(results, out)
    print(table)
    print(f"\nresults written to {out}")
    lost = sum(p.lost for p in results["paths"])
    lost += sum(p.lost for _, step in results["sweep"] for p in step.values())
    lost += results["beta"].lost + int(sum(r["lost"] for r in results["rotation"]))
    return 0 if lost == 0 else 1
