"""Debian packages that some tests need: installed on demand, or the test skips with the reason.

Tests call ``require_binary("nginx", package="nginx")``. On a fresh machine (CI) this runs
``apt-get update`` once per test run and installs the package; where that cannot be done (not
root, no apt, the package manager refuses) the test is skipped with the printed reason, never
silently.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

_LOCK = Path("/tmp/relay-tests-apt.lock")
_UPDATED = Path("/tmp/relay-tests-apt.updated")


def _apt(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(
        ["apt-get", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def install_packages(*packages: str, timeout: float = 900) -> str | None:
    """Install Debian packages; returns None on success, else the reason it could not."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available on this machine"
    if os.geteuid() != 0:
        return "installing Debian packages needs root"
    _LOCK.touch(exist_ok=True)
    with _LOCK.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers or parallel runs share apt
        if not _UPDATED.exists():
            done = _apt("update", timeout=timeout)
            if done.returncode != 0:
                return f"apt-get update failed: {done.stderr.strip()[-300:]}"
            _UPDATED.touch()
        done = _apt("install", "-y", "--no-install-recommends", *packages, timeout=timeout)
        if done.returncode != 0:
            return f"apt-get install {' '.join(packages)} failed: {done.stderr.strip()[-300:]}"
    return None


def require_binary(binary: str, *, package: str, extra_packages: tuple[str, ...] = ()) -> str:
    """The path of ``binary``, installing ``package`` if needed; skips the test with the reason."""
    found = shutil.which(binary) or _sbin(binary)
    if found is None:
        reason = install_packages(package, *extra_packages)
        found = shutil.which(binary) or _sbin(binary)
        if found is None:
            pytest.skip(f"needs {binary} (Debian package {package}): {reason or 'not found after install'}")
    return found


def _sbin(binary: str) -> str | None:
    for folder in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = Path(folder, binary)
        if candidate.exists():
            return str(candidate)
    return None
