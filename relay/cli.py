"""Command line: ``relay serve``, ``relay simulate``, ``relay bench``.

Logging is configured here and only here: library code never touches global logging setup.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import ValidationError

from relay import __version__
from relay.core import speedups
from relay.core.redaction import redact_text
from relay.io.workers import (
    WORKER_DIR_ENV,
    WORKER_INDEX_ENV,
    SlotClient,
    run_workers,
    serve_own_metrics,
)
from relay.observability.gc_pauses import GcPauses
from relay.observability.logging import configure_logging, get_logger
from relay.settings import Settings, load_settings

if TYPE_CHECKING:
    from relay.io.guard import GuardedSite


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the relay")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--config", help="TOML settings file (default: $RELAY_CONFIG)")
    serve.add_argument("--workers", type=int, help="worker processes on the port (default: 1)")
    simulate = commands.add_parser("simulate", help="run the Realtime API simulator alone")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8081)
    simulate.add_argument("--speed", type=float, default=1.0, help="1 = real time")
    simulate.add_argument(
        "--profile",
        choices=("realistic", "fast"),
        default="realistic",
        help="the live API's delays (default) or none; the flags below override single figures",
    )
    for figure, meaning in (
        ("handshake", "before the 101 of the WebSocket upgrade"),
        ("session-created", "from the 101 to session.created"),
        ("ack", "before answering each client event the API acknowledges"),
        ("session-update", "extra time to answer a session.update, on top of --ack-ms"),
        ("first-delta", "from response.created to the response's first output"),
        ("transcription", "from a commit to its transcript (more for longer audio)"),
        ("rate-limits", "from response.done to rate_limits.updated"),
    ):
        simulate.add_argument(f"--{figure}-ms", type=float, metavar="MS", help=meaning)
    # Listed for --help; its own options are the benchmark's (``relay bench --help``).
    commands.add_parser("bench", help="run the benchmark (see bench/)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after "bench" is the benchmark's: argparse's REMAINDER would refuse a
        # leading option such as --quick.
        from bench.__main__ import main as bench_main

        return int(bench_main(argv[1:]))
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    if command == "simulate":
        return _simulate(args)
    return _serve(
        getattr(args, "config", None),
        getattr(args, "host", None),
        getattr(args, "port", None),
        getattr(args, "workers", None),
    )


def _serve(config: str | None, host: str | None, port: int | None, workers: int | None = None) -> int:
    try:
        settings = load_settings(config, host=host, port=port, workers=workers)
    except ValidationError as exc:
        print(f"relay: invalid settings:\n{settings_errors(exc)}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"relay: invalid settings: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    problems = settings.startup_problems()
    if problems:
        for problem in problems:
            print(f"relay: refusing to start: {problem}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    worker = os.environ.get(WORKER_INDEX_ENV)
    if settings.workers > 1 and worker is None:  # the parent: it starts the workers and waits
        _announce(settings)
        _install_uvloop()
        argv = [*(["--config", config] if config else []), *(["--host", host] if host else [])]
        argv += ["--port", str(port)] if port else []
        return asyncio.run(run_workers(settings, argv))
    _harden_http_edge()
    if worker is None:
        _announce(settings)
        _warn_about(settings)
    _install_uvloop()
    asyncio.run(_run_relay(settings))
    return 0


def settings_errors(exc: ValidationError) -> str:
    """What is wrong, without the values given: a mistyped key name must not print the key."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"  {where}: {redact_text(error['msg'])}")
    return "\n".join(lines)


def _announce(settings: Settings) -> None:
    kind = settings.upstream_kind
    names = {"openai": "OpenAI", "azure": "Azure OpenAI"}
    where = redact_text(settings.upstream_url or "") or names.get(kind)  # Azure's ?api-key= form
    if kind == "simulator" and not settings.upstream_url:
        where = "the embedded simulator (no OPENAI_API_KEY or Azure credentials are set)"
    workers = f", {settings.workers} workers" if settings.workers > 1 else ""
    # Where conversations live decides where a client can resume: say it once, at the start.
    state = "shared in Redis" if settings.redis_url is not None else "in this process (resume on it only)"
    print(
        f"relay {__version__} listening on http://{settings.host}:{settings.port} "
        f"(WebSocket /v1/realtime{workers}), upstream: {where}, conversations: {state}, "
        f"per-frame code: {speedups.build()}",
        file=sys.stderr,
        flush=True,
    )


def _harden_http_edge() -> None:
    """Process-wide, so set here once, like logging: what aiohttp does before the app runs."""
    import aiohttp.web_response

    from relay.io.guard import MalformedRequestLog

    # aiohttp answers a request it cannot parse with 400 before any hook of the app runs; that
    # response's Server header is this module constant, naming aiohttp's and Python's versions.
    aiohttp.web_response.SERVER_SOFTWARE = "relay"  # type: ignore[attr-defined]
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestLog())


def _warn_about(settings: Settings) -> None:
    """Settings that work but accept more than an operator probably means to."""
    if (settings.jwt_secret is not None or settings.jwt_public_key) and not settings.jwt_audience:
        get_logger().warning(
            "jwt_audience_not_set",
            message="JWTs are accepted whatever their audience: a token your identity provider "
            "issued for another service passes too; set RELAY_JWT_AUDIENCE",
        )


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def start_server(
    app: web.Application, settings: Settings, *, reuse_port: bool = False
) -> tuple[web.AppRunner, GuardedSite]:
    """Serve ``app`` as ``relay serve`` does: aiohttp behind the edge guard (tests use it too)."""
    from relay.app import METRICS
    from relay.io.guard import GuardedSite

    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=5.0, keepalive_timeout=settings.keepalive_timeout_s
    )
    await runner.setup()
    site = GuardedSite(
        runner,
        settings.host,
        settings.port,
        header_timeout_s=settings.header_timeout_s,
        max_unfinished=settings.max_unfinished_heads,
        max_unfinished_per_peer=settings.max_unfinished_heads_per_peer,
        metrics=app[METRICS],
        ssl_context=_tls(settings),
        reuse_port=reuse_port,
    )
    await site.start()
    return runner, site


async def _run_relay(settings: Settings) -> None:
    from relay.app import METRICS, WORKER_DIR, create_app, drain
    from relay.io.handler import RELAY_CONTEXT

    app = create_app(settings)
    directory = os.environ.get(WORKER_DIR_ENV)
    if directory:
        app[WORKER_DIR] = directory
    runner, _ = await start_server(app, settings, reuse_port=directory is not None)
    pauses = GcPauses(app[METRICS])  # start-up's objects out of later collections, pauses timed
    pauses.freeze_start_up()
    pauses.install()
    freezing = None
    if settings.gc_freeze_every_s:  # and the sessions' long-lived objects, as they settle
        registry = app[RELAY_CONTEXT].registry
        freezing = asyncio.create_task(pauses.run(settings.gc_freeze_every_s, lambda: len(registry.sessions)))
    if directory:  # one of several workers: caps across them, its metrics for the merged /metrics
        slots = await SlotClient.connect(directory)
        app[RELAY_CONTEXT].registry.shared = slots

        async def own_metrics(request: web.Request) -> web.Response:
            body, content_type = app[METRICS].render()
            return web.Response(body=body, headers={"Content-Type": content_type})

        metrics_runner = await serve_own_metrics(directory, os.environ[WORKER_INDEX_ENV], own_metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    get_logger().info("shutdown_requested", grace_s=settings.drain_grace_s)
    await drain(app, settings.drain_grace_s)
    if freezing is not None:
        freezing.cancel()
    await runner.cleanup()
    if directory:
        await metrics_runner.cleanup()
        await slots.close()


def _tls(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def _simulate(args: argparse.Namespace) -> int:
    from dataclasses import fields, replace

    from relay.simulator.config import SimulatorConfig
    from relay.simulator.server import run_simulator
    from relay.simulator.timing import Timing

    profile = Timing.fast() if args.profile == "fast" else Timing.realistic()
    overrides = {f.name: getattr(args, f.name) for f in fields(Timing) if getattr(args, f.name) is not None}
    try:
        timing = replace(profile, **overrides)
    except ValueError as exc:
        print(f"relay simulate: {exc}", file=sys.stderr)
        return 2
    configure_logging("INFO", "console")
    where = f"ws://{args.host}:{args.port}/v1/realtime"
    print(f"relay simulator on {where}, {args.profile} profile: {timing}", file=sys.stderr, flush=True)
    run_simulator(SimulatorConfig(speed=args.speed, timing=timing), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
