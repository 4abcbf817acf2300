"""CPU per relayed frame, side by side: ``python -m bench.ab [--other DIR] [--profile FILE]``.

The benchmark's main comparison cut to what a change to the hot path needs measured before and
after: 100 voice sessions through nginx, the forward-only floor, this checkout's relay and, with
``--other``, the relay of another checkout (say ``git worktree add /tmp/old HEAD~1``, built with
``python setup.py build_ext --inplace`` there), in interleaved rounds so the machine's drift hits
all alike. Per target: CPU per frame split into user and kernel time, in steady state too, and
against nginx. ``--profile`` samples this checkout's relay during its rounds with py-spy (Python
frames, read without pausing it: ``py-spy record --nonblocking -f raw``); ``--perf`` with
``perf record -g`` (C symbols and the kernel).

An A/A run (``--other`` this same checkout) shows the noise a difference must beat.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.load import Stamps
from bench.runner import simulator_config, voice_sessions
from bench.servers import Proc, cpu_times, minor_faults, start_floor, start_nginx, start_relay
from relay.simulator.server import start_simulator


@dataclass
class Row:
    name: str
    proc: Proc | None
    frames: int = 0
    user: float = 0.0
    system: float = 0.0
    steady: float = 0.0
    lost: int = 0
    faults: int = 0  # minor page faults: fresh memory the kernel had to zero and map
    rounds: list[float] = field(default_factory=list)  # CPU us per frame, each round
    c2u: list[float] = field(default_factory=list)  # one-way latency of every frame, ms
    u2c: list[float] = field(default_factory=list)

    def times(self) -> tuple[float, float]:
        return (0.0, 0.0) if self.proc is None else cpu_times(self.proc.proc.pid)

    def minor_faults(self) -> int:
        return 0 if self.proc is None else minor_faults(self.proc.proc.pid)

    def us(self, seconds: float) -> float:
        return seconds / self.frames * 1e6 if self.frames else float("nan")


async def run(args: argparse.Namespace) -> list[Row]:
    current = {"clock": Stamps()}
    runner, sim_port = await start_simulator(simulator_config(current))
    workdir = Path(tempfile.mkdtemp(prefix="relay-ab-"))
    rows = [Row("direct", None)]
    profiler = None
    try:  # a server that started is stopped however the rest goes
        await _start(args, rows, sim_port, workdir)
        profiler = _profiler(args, rows)
        for trial in range(args.rounds):
            for row in rows:
                port = row.proc.port if row.proc else sim_port
                clock = current["clock"] = Stamps()
                marks: list[float] = []
                user, system = row.times()
                faults = row.minor_faults()
                await voice_sessions(
                    f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime",
                    clock,
                    args.sessions,
                    args.duration,
                    tag=f"{trial}.",
                    steady=lambda r=row, m=marks: m.append(sum(r.times())),  # type: ignore[misc]
                )
                after_user, after_system = row.times()
                row.faults += row.minor_faults() - faults
                used_user, used_system = after_user - user, after_system - system
                frames = len(clock.c2u_sent) + len(clock.u2c_sent)
                row.frames += frames
                row.user += used_user
                row.system += used_system
                row.steady += marks[1] - marks[0]
                row.lost += clock.lost()
                row.c2u += clock.latencies("c2u").tolist()
                row.u2c += clock.latencies("u2c").tolist()
                row.rounds.append((used_user + used_system) / frames * 1e6)
    finally:
        if profiler:
            profiler.send_signal(2)
            profiler.wait(30)
        for row in rows:
            if row.proc:
                row.proc.stop()
        await runner.cleanup()
    return rows


async def _start(args: argparse.Namespace, rows: list[Row], sim_port: int, workdir: Path) -> None:
    """Each target's server, appended to ``rows`` as it starts (the caller stops them all)."""
    if not args.no_nginx and (nginx := await start_nginx(sim_port, workdir)):
        rows.append(Row("nginx", nginx))
    if not args.no_floor:
        rows.append(Row("floor", await start_floor(sim_port)))
    rows.append(Row("relay", await start_relay(sim_port)))
    if args.python_build:
        pure = await start_relay(sim_port, extra={"RELAY_NO_EXTENSIONS": "1"})
        rows.append(Row("relay (pure Python)", pure))
    for other in args.other:
        rows.append(Row(f"relay ({other})", await start_relay(sim_port, cwd=other)))
    for settings in args.env:  # "NAME=VALUE NAME=VALUE": one more relay with all of them
        extra = dict(setting.partition("=")[::2] for setting in settings.split())
        rows.append(Row(f"relay ({settings})", await start_relay(sim_port, extra=extra)))


def _profiler(args: argparse.Namespace, rows: list[Row]) -> subprocess.Popen[bytes] | None:
    """py-spy or perf attached to this checkout's relay, if asked for."""
    relay = next(r for r in rows if r.name == "relay")
    assert relay.proc is not None
    pid = str(relay.proc.proc.pid)
    if args.profile:  # Python frames only, read without pausing the process
        spy = str(Path(sys.executable).with_name("py-spy"))
        command = [spy, "record", "--nonblocking", "-f", "raw", "-r", "500", "-o", args.profile, "--pid", pid]
    elif args.perf:  # C symbols only (Python 3.11 has no perf trampoline), at little cost
        command = ["perf", "record", "-F", "999", "--call-graph", "dwarf,16384", "-o", args.perf, "-p", pid]
    else:
        return None
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def report(rows: list[Row]) -> str:
    nginx = next((r for r in rows if r.name == "nginx"), None)
    base = nginx.us(nginx.user + nginx.system) if nginx else None
    lines = [
        "| target | frames | lost | p99 ms c2u / u2c | user us/frame | kernel us/frame | CPU us/frame "
        "| each round | steady | vs nginx | page faults per 1000 frames |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        p99 = f"{_p99(row.c2u):.2f} / {_p99(row.u2c):.2f}"
        if row.proc is None:
            lines.append(f"| {row.name} | {row.frames} | {row.lost} | {p99} | | | | | | | |")
            continue
        cpu = row.us(row.user + row.system)
        ratio = f"{cpu / base:.2f}x" if base else ""
        each = " / ".join(f"{r:.1f}" for r in row.rounds)
        lines.append(
            f"| {row.name} | {row.frames} | {row.lost} | {p99} | {row.us(row.user):.1f} "
            f"| {row.us(row.system):.1f} | {cpu:.1f} | {each} | {row.us(row.steady):.1f} | {ratio} "
            f"| {row.faults / row.frames * 1000 if row.frames else 0:.1f} |"
        )
    return "\n".join(lines)


def _p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--other", action="append", default=[], help="another checkout whose relay runs beside this one"
    )
    parser.add_argument("--python-build", action="store_true", help="also this checkout's pure-Python build")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="'NAME=VALUE ...'",
        help="also this checkout's relay with these variables set (a setting, an allocator tunable)",
    )
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--profile", help="py-spy raw output file for this checkout's relay")
    parser.add_argument("--perf", help="perf record output file for this checkout's relay")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the load side on core 1; the proxies are pinned to core 0
    import uvloop

    rows = uvloop.run(run(args))
    print(report(rows))
    return 0 if all(r.lost == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
