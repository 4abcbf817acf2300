"""Where each proxy's CPU per frame goes: ``python -m bench.profile``.

One round of the main comparison's load per proxy (nginx, the forward-only floor, the relay),
each sampled by ``perf record`` (999 Hz, no call graphs: a few percent of overhead), and the
CPU per frame split by what ran: the kernel, the interpreter, the relay's compiled modules, the
event loop, libc (malloc and free, mostly), other C libraries (orjson, pybase64, pydantic-core),
nginx's own code. Set beside the floor's, the relay's split is the profile that says where the
gap to nginx comes from: what the design costs with no work per frame, and what the relay's own
work costs on top. The full benchmark runs it after its main comparison; without ``perf`` (Debian's
``linux-perf``) or the permission to use it, the report says so and why.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import relay
from bench.load import Stamps
from bench.servers import cpu_times

GROUPS = ("kernel", "interpreter", "relay compiled", "event loop", "libc", "other C", "nginx")
_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)(?:\s+\[[.k]\]\s+(.*\S))?\s*$")


def relay_modules() -> frozenset[str]:
    """File names of the relay's compiled modules, as perf names their DSOs."""
    root = Path(relay.__file__).parent
    return frozenset(p.name for p in root.rglob("*.so"))


def group_of(dso: str, ours: frozenset[str]) -> str:
    if dso.startswith("[kernel") or dso in ("[vdso]", "[vsyscall]"):
        return "kernel"
    if dso.startswith("libpython") or dso.startswith("python3"):
        return "interpreter"
    if dso in ours:
        return "relay compiled"
    if dso.startswith("loop.cpython"):  # uvloop (libuv is linked into it)
        return "event loop"
    if dso.startswith(("libc.so", "libc-", "ld-linux")):
        return "libc"
    if dso.startswith("nginx"):
        return "nginx"
    return "other C"


@dataclass
class Split:
    """One proxy's CPU per frame (us), by group, and its costliest symbols."""

    name: str
    us_per_frame: float
    groups: dict[str, float] = field(default_factory=dict)
    symbols: list[tuple[str, float]] = field(default_factory=list)  # (symbol [dso], us per frame)


def parse(report_by_dso: str, report_by_symbol: str, us_per_frame: float, ours: frozenset[str]) -> Split:
    """``perf report --sort dso`` and ``--sort dso,sym`` (``--stdio -q``) into a split, the
    shares scaled to the CPU per frame measured over the same round."""
    split = Split("", us_per_frame, dict.fromkeys(GROUPS, 0.0))
    for line in report_by_dso.splitlines():
        if m := _LINE.match(line):
            split.groups[group_of(m[2], ours)] += float(m[1]) / 100 * us_per_frame
    for line in report_by_symbol.splitlines():
        if (m := _LINE.match(line)) and m[3]:
            split.symbols.append((f"{m[3]} [{m[2]}]", float(m[1]) / 100 * us_per_frame))
    split.symbols.sort(key=lambda s: -s[1])
    return split


def perf_unusable() -> str | None:
    """Why ``perf record`` cannot sample another process here, or None."""
    perf = shutil.which("perf")
    if perf is None:
        return "perf is not installed (Debian: apt-get install linux-perf)"
    with tempfile.TemporaryDirectory() as tmp:
        probe = subprocess.run(
            [perf, "record", "-q", "-F", "99", "-o", f"{tmp}/probe", "--", "true"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[0]
        return f"perf record failed here ({reason}); kernel.perf_event_paranoid may forbid it"
    return None


async def profile_round(
    name: str, pid: int, url: str, sessions: int, duration: float, current: dict[str, Any]
) -> Split:
    """One round of the voice load on ``url`` while perf samples ``pid``."""
    from bench.runner import voice_sessions

    ours = relay_modules()
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/perf.data"
        import psutil

        pids = [
            pid,
            *(child.pid for child in psutil.Process(pid).children(recursive=True)),
        ]  # nginx's workers
        recorder = subprocess.Popen(
            ["perf", "record", "-q", "-F", "999", "-o", data, "-p", ",".join(map(str, pids))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # perf attached before the first frame
        clock = current["clock"] = Stamps()
        before = sum(cpu_times(pid))
        await voice_sessions(url, clock, sessions, duration, tag="profile.")
        used = sum(cpu_times(pid)) - before
        recorder.send_signal(signal.SIGINT)
        await asyncio.to_thread(recorder.wait, 60)
        frames = len(clock.c2u_sent) + len(clock.u2c_sent)
        per_frame = used / frames * 1e6 if frames else float("nan")

        def report(sort: str) -> str:
            command = [
                "perf",
                "report",
                "-i",
                data,
                "--no-children",
                "--sort",
                sort,
                "--stdio",
                "-q",
                "-g",
                "none",
            ]
            return subprocess.run(command, capture_output=True, text=True, timeout=300).stdout

        by_dso, by_symbol = await asyncio.gather(
            asyncio.to_thread(report, "dso"), asyncio.to_thread(report, "dso,sym")
        )
    split = parse(by_dso, by_symbol, per_frame, ours)
    split.name = name
    return split


def table(splits: list[Split]) -> list[str]:
    """The splits side by side, in us per frame, with the relay's excess over the floor."""
    if not splits:
        return []
    relay_split = next((s for s in splits if s.name == "relay"), None)
    floor_split = next((s for s in splits if s.name.startswith("floor")), None)
    pair = (relay_split, floor_split) if relay_split and floor_split else None
    head = "| us per frame | " + " | ".join(s.name for s in splits) + (" | relay - floor |" if pair else " |")
    lines = [head, "|---" * (len(splits) + 1 + bool(pair)) + "|"]
    for group in (*GROUPS, "total"):
        values = [_us(s, group) for s in splits]
        if group != "total" and not any(v >= 0.05 for v in values):
            continue
        row = f"| {group} | " + " | ".join(f"{v:.1f}" for v in values)
        if pair:
            row += f" | {_us(pair[0], group) - _us(pair[1], group):+.1f}"
        lines.append(row + " |")
    if relay_split is not None and relay_split.symbols:
        top = ", ".join(f"{sym} {us:.2f}" for sym, us in relay_split.symbols[:8])
        lines += ["", f"The relay's costliest symbols (us per frame): {top}"]
    return lines


def _us(split: Split, group: str) -> float:
    return split.us_per_frame if group == "total" else split.groups.get(group, 0.0)


async def _main(args: argparse.Namespace) -> list[Split]:
    from bench.runner import simulator_config
    from bench.servers import start_floor, start_nginx, start_relay
    from relay.simulator.server import start_simulator

    current = {"clock": Stamps()}
    runner, sim_port = await start_simulator(simulator_config(current))
    workdir = Path(tempfile.mkdtemp(prefix="relay-profile-"))
    procs = []
    if nginx := await start_nginx(sim_port, workdir):
        procs.append(("nginx", nginx))
    procs.append(("floor", await start_floor(sim_port)))
    procs.append(("relay", await start_relay(sim_port)))
    splits = []
    try:
        for name, proc in procs:
            url = f"ws://127.0.0.1:{proc.port}/v1/realtime?model=gpt-realtime"
            splits.append(
                await profile_round(name, proc.proc.pid, url, args.sessions, args.duration, current)
            )
    finally:
        for _, proc in procs:
            proc.stop()
        await runner.cleanup()
    return splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    if reason := perf_unusable():
        print(f"no profile: {reason}")
        return 1
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the load side on core 1; the proxies are pinned to core 0
    import uvloop

    print("\n".join(table(uvloop.run(_main(args)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
