"""The Autobahn|Testsuite against the relay's own WebSocket layer, both sides.

``server``: an echo server on :func:`relay.io.websocket.accept`, for ``wstest -m fuzzingclient``.
``client``: :func:`relay.io.websocket.connect` driving ``wstest -m fuzzingserver`` case by case.
``check``: both runs against a ``wstest`` in a Python 2.7 virtualenv (scripts/conformance.sh
makes it), judged from the JSON reports; exits non-zero if any case failed.

    python -m tests.support.autobahn check --python ~/.cache/relay-conformance/venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from aiohttp import web
from yarl import URL

from relay.core.websocket import HandshakeError
from relay.io.websocket import WebSocketConnection, accept, connect

MAX_SIZE = 64 * 1024 * 1024  # case 9.1.6 sends a 16 MiB message; leave room
# permessage-deflate (12.*, 13.*) is never negotiated by the relay: those cases do not apply.
ALWAYS_EXCLUDED = ("12.*", "13.*")
PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
CASE_TIMEOUT_S = 60.0  # one case as a client; 9.x moves 16 MiB in pieces, most take milliseconds

# wstest, with its listening sockets on loopback only (it binds every interface by default).
_WSTEST = """\
import sys
from autobahntestsuite import wstest  # first: it installs the reactor
from autobahntestsuite import fuzzing
from autobahn.twisted import websocket
fuzzing.listenWS = lambda f, c=None: websocket.listenWS(f, c, interface="127.0.0.1")
sys.argv[0] = "wstest"
sys.exit(wstest.run())
"""


# ---------------------------------------------------------------------------------- the testees
def _echo(conn: WebSocketConnection) -> None:
    def echo(opcode: int, payload: bytes) -> None:
        conn.send(payload, opcode)

    conn.set_handler(echo)


async def _echo_handler(request: web.Request) -> web.StreamResponse:
    upgraded = await accept(
        request, subprotocols=(), headers={}, max_size=MAX_SIZE, write_limits=(1 << 20, 1 << 18)
    )
    if isinstance(upgraded, web.Response):
        return upgraded
    _echo(upgraded.connection)
    await upgraded.connection.closed
    return upgraded.response


@contextlib.asynccontextmanager
async def echo_server(port: int) -> AsyncIterator[int]:
    """The relay's server side echoing every message with its opcode, on 127.0.0.1:``port``."""
    app = web.Application()
    app.router.add_get("/", _echo_handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield port
    finally:
        await runner.cleanup()


async def _session(url: URL) -> bytes:
    """One connection to the fuzzing server, echoing until it ends; returns its first message."""
    conn = await connect(url, {}, max_size=MAX_SIZE, open_timeout_s=10.0)
    first: list[bytes] = []

    def handle(opcode: int, payload: bytes) -> None:
        if not first:
            first.append(payload)
        conn.send(payload, opcode)

    conn.set_handler(handle)
    try:
        await asyncio.wait_for(asyncio.shield(conn.closed), CASE_TIMEOUT_S)
    except TimeoutError:
        conn.abort()
    return first[0] if first else b""


async def drive_client(base: str, agent: str) -> int:
    """Run every case of a fuzzing server at ``base`` (ws://host:port); returns how many."""
    count = int(await _session(URL(f"{base}/getCaseCount")))
    for case in range(1, count + 1):
        try:
            await _session(URL(f"{base}/runCase?case={case}&agent={agent}"))
        except (OSError, TimeoutError, HandshakeError) as exc:  # the report shows the case failed
            print(f"case {case}: {exc!r}", file=sys.stderr)
    await _session(URL(f"{base}/updateReports?agent={agent}"))
    return count


# ---------------------------------------------------------------------------------- the runs
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_for_port(port: int, deadline: float) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"wstest did not listen on {port}") from None
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return


async def _wstest(
    python: str, mode: str, spec: Mapping[str, object], workdir: Path
) -> asyncio.subprocess.Process:
    """Start wstest in ``mode``; its output goes to ``<workdir>/<mode>.log``."""
    spec_file, log = _write_spec(mode, spec, workdir)
    with log:
        return await asyncio.create_subprocess_exec(
            python, "-c", _WSTEST, "-m", mode, "-s", str(spec_file), "-u", "0",
            stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip


def _write_spec(mode: str, spec: Mapping[str, object], workdir: Path) -> tuple[Path, BinaryIO]:
    workdir.mkdir(parents=True, exist_ok=True)
    spec_file = workdir / f"{mode}.json"
    spec_file.write_text(json.dumps(spec, indent=2))
    return spec_file, (workdir / f"{mode}.log").open("wb")


async def run_fuzzingclient(python: str, workdir: Path, exclude: Sequence[str], timeout_s: float) -> Path:
    """wstest attacks the relay's server side; returns the report directory."""
    port, outdir = free_port(), workdir / "server-side"
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": "relay", "url": f"ws://127.0.0.1:{port}"}],
        "cases": ["*"],
        "exclude-cases": [*ALWAYS_EXCLUDED, *exclude],
        "exclude-agent-cases": {},
    }
    async with echo_server(port):
        proc = await _wstest(python, "fuzzingclient", spec, workdir)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return outdir


async def run_fuzzingserver(python: str, workdir: Path, exclude: Sequence[str], timeout_s: float) -> Path:
    """The relay's client side against wstest's fuzzing server; returns the report directory."""
    port, outdir = free_port(), workdir / "client-side"
    spec = {
        "url": f"ws://127.0.0.1:{port}",
        "outdir": str(outdir),
        "cases": ["*"],
        "exclude-cases": [*ALWAYS_EXCLUDED, *exclude],
        "exclude-agent-cases": {},
    }
    proc = await _wstest(python, "fuzzingserver", spec, workdir)
    try:
        async with asyncio.timeout(timeout_s):
            await _wait_for_port(port, time.monotonic() + 30)
            await drive_client(f"ws://127.0.0.1:{port}", "relay")
    finally:
        proc.terminate()  # the fuzzing server runs until stopped
        await proc.wait()
    return outdir


def judge(outdir: Path) -> dict[str, list[str]]:
    """Case ids by behavior, from ``index.json``; a closing behavior that is not passing is
    named too (e.g. "OK, close UNCLEAN"), which makes the case fail."""
    report = outdir / "index.json"
    if not report.exists():
        raise RuntimeError(f"wstest wrote no report; see the .log beside {outdir}")
    by_behavior: dict[str, list[str]] = {}
    for cases in json.loads(report.read_text()).values():
        for case, result in sorted(cases.items(), key=lambda item: _case_key(item[0])):
            behavior, closing = result["behavior"], result["behaviorClose"]
            if closing not in PASSING:
                behavior = f"{behavior}, close {closing}"
            by_behavior.setdefault(behavior, []).append(case)
    return by_behavior


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def summary(name: str, by_behavior: dict[str, list[str]]) -> tuple[str, bool]:
    """A few lines for a person, and whether the run passed."""
    counts = ", ".join(f"{behavior} {len(cases)}" for behavior, cases in sorted(by_behavior.items()))
    lines = [f"{name}: {counts or 'no cases ran'}"]
    for behavior, cases in sorted(by_behavior.items()):
        if behavior != "OK":
            lines.append(f"  {behavior}: {' '.join(cases)}")
    passed = bool(by_behavior) and all(behavior in PASSING for behavior in by_behavior)
    return "\n".join(lines), passed


async def check(python: str, workdir: Path, exclude: Sequence[str], timeout_s: float) -> bool:
    passed = True
    runs = (
        ("server side (fuzzingclient)", run_fuzzingclient),
        ("client side (fuzzingserver)", run_fuzzingserver),
    )
    for name, run in runs:
        started = time.monotonic()
        outdir = await run(python, workdir, exclude, timeout_s)
        text, ok = summary(name, judge(outdir))
        print(f"{text}\n  ({time.monotonic() - started:.0f} s, report: {outdir}/index.html)", flush=True)
        passed = passed and ok
    print("conformance: passed" if passed else "conformance: FAILED (cases above)", flush=True)
    return passed


# ---------------------------------------------------------------------------------- command line
async def _serve_forever(port: int) -> None:
    async with echo_server(port):
        print(f"echo server on ws://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.autobahn", description=__doc__)
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("server", help="echo server for wstest -m fuzzingclient")
    server.add_argument("--port", type=int, default=9001)
    client = modes.add_parser("client", help="drive wstest -m fuzzingserver")
    client.add_argument("--url", default="ws://127.0.0.1:9001")
    client.add_argument("--agent", default="relay")
    run = modes.add_parser("check", help="both runs, judged; exit 1 on any failed case")
    run.add_argument("--python", required=True, help="the Python 2.7 that has autobahntestsuite")
    run.add_argument("--workdir", type=Path, default=Path("build/conformance"))
    run.add_argument("--exclude", nargs="*", default=[], help="more case patterns to skip, e.g. 9.*")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds, per run")
    args = parser.parse_args(argv)
    _install_uvloop()
    if args.mode == "server":
        asyncio.run(_serve_forever(args.port))
        return 0
    if args.mode == "client":
        print(f"{asyncio.run(drive_client(args.url, args.agent))} cases run")
        return 0
    return 0 if asyncio.run(check(args.python, args.workdir.resolve(), args.exclude, args.timeout)) else 1


def _install_uvloop() -> None:
    """The loop the relay runs on in production (relay.cli does the same)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    sys.exit(main())
