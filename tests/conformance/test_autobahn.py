"""RFC 6455 conformance of the relay's own WebSocket layer: the Autobahn|Testsuite, both sides.

This runs ``scripts/conformance.sh``, exactly what ``make conformance`` runs: every case but
permessage-deflate's (12.*, 13.*), about 300 per side, a minute in all once installed. wstest
needs Python 2.7; the script installs it once into a virtualenv outside the project, and where
that cannot be done here the test is skipped with the script's reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "conformance.sh"
UNAVAILABLE = 3  # the script's exit status when wstest cannot be had on this machine


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}  # the relay's side runs in this interpreter
    return subprocess.run(
        [str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_autobahn_testsuite_passes_on_the_server_and_the_client_side(tmp_path: Path) -> None:
    install = _script("--install-only", timeout=480)  # minutes the first time, then nothing
    if install.returncode == UNAVAILABLE:
        pytest.skip(install.stderr.strip().splitlines()[-1])
    assert install.returncode == 0, install.stdout + install.stderr
    run = _script("--workdir", str(tmp_path), "--timeout", "180", timeout=400)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "server side (fuzzingclient): " in run.stdout
    assert "client side (fuzzingserver): " in run.stdout
    assert "conformance: passed" in run.stdout
