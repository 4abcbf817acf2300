"""JSON log lines for a session's lifecycle; no key, token or audio payload in any of them."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys

import orjson
import websockets

from relay.observability.logging import configure_logging, get_logger, register_secret
from tests.support.relay_process import clean_env, free_port, wait_listening


def test_redaction_processor() -> None:
    stream = io.StringIO()
    register_secret("client-secret-token-xyz")
    configure_logging("DEBUG", "json", stream=stream)
    log = get_logger(relay_session="relay_1")
    log.info(
        "probe",
        authorization="Bearer abc.def",
        note="key sk-proj-ABCDEF123456 here",
        token_echo="client-secret-token-xyz",
        audio="A" * 500,
        delta="B" * 500,
    )
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["authorization"] == "[redacted]"
    assert "sk-proj" not in line["note"]
    assert "client-secret-token-xyz" not in stream.getvalue()
    assert line["audio"] == "[500 bytes]"
    assert line["delta"] == "[500 bytes]"
    assert line["relay_session"] == "relay_1"
    assert line["level"] == "info"


async def test_session_lifecycle_log_lines() -> None:
    port, token, key = free_port(), "log-test-token-0123456789", "sk-proj-LOGKEY0123456789abcdef"
    from tests.support.scripted_upstream import ScriptedUpstream

    upstream = await ScriptedUpstream().start()
    env = clean_env(
        RELAY_PORT=str(port),
        RELAY_CLIENT_TOKENS=token,
        OPENAI_API_KEY=key,
        RELAY_UPSTREAM="openai",
        RELAY_UPSTREAM_URL=upstream.url,
        RELAY_DRAIN_GRACE_S="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    await wait_listening(port, proc)
    audio = base64.b64encode(os.urandom(960)).decode()
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.recv()
        await ws.send(orjson.dumps({"type": "input_audio_buffer.append", "audio": audio}).decode())
        await ws.send('{"type":"session.update","session":{"type":"realtime","bogus":1}}')
        await ws.recv()
    await asyncio.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    await upstream.close()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    for expected in ("session_started", "upstream_connected", "event_rejected", "session_ended"):
        assert expected in events, events
    started = next(line for line in lines if line["event"] == "session_started")
    ended = next(line for line in lines if line["event"] == "session_ended")
    assert started["relay_session"] == ended["relay_session"]
    assert ended["outcome"] == "client_closed"
    assert "duration_s" in ended
    text = err.decode()
    assert key not in text
    assert key[-10:] not in text
    assert token not in text
    assert audio[:40] not in text
