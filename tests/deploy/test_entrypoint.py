"""The image's entrypoint, run the way the image runs it (no Docker engine here).

A clean virtual environment is built the way the Dockerfile builds it (a wheel of the project,
installed without the test extras), then the relay is started with the Dockerfile's exact
ENTRYPOINT, CMD and ENV, probed on /healthz and /readyz, and stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.relay_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def _dockerfile() -> tuple[list[str], dict[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM ") :]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", final, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", final, re.M).group(1))  # type: ignore[union-attr]
    env_block = re.search(r"^ENV (.*?)(?:\n\S)", final, re.M | re.S).group(1)  # type: ignore[union-attr]
    env = dict(re.findall(r"(\w+)=(\S+)", env_block.replace("\\\n", " ")))
    return entrypoint + cmd, env


@pytest.mark.slow
def test_image_entrypoint_serves_and_drains(tmp_path: Path) -> None:
    command, image_env = _dockerfile()
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)], check=True, timeout=300
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = next(wheels.glob("relay-*.whl"))
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, timeout=600)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    assert "pytest" not in installed
    assert "hypothesis" not in installed
    # The image's wheel carries the compiled per-frame code (the build stage has gcc), unless
    # this run is the pure-Python build's.
    build = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from relay.core import speedups; print(speedups.build())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert build == ("python" if os.environ.get("RELAY_NO_EXTENSIONS") else "compiled")
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        **{k: v.replace("$PATH", os.environ["PATH"]) for k, v in image_env.items() if k != "PATH"},
        "RELAY_HOST": "127.0.0.1",
        "RELAY_PORT": str(port),
        "RELAY_CLIENT_TOKENS": "entrypoint-token",
        "RELAY_DRAIN_GRACE_S": "1",
    }
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for path in ("/healthz", "/readyz"):
            assert _get(port, path) == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert image_env["RELAY_HOST"] == "0.0.0.0"


def _get(port: int, path: str) -> int:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return int(response.status)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
