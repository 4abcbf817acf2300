"""A real ``redis-server`` on a free loopback port, for tests of state shared across relays.

``require_redis()`` finds the binary or installs the Debian package (``apt-get update`` first if
needed), else skips the test with the reason. ``running_redis()`` starts a server with no
persistence (``--save "" --appendonly no``), so a stop loses every key, as a crashed cache would;
``stop()`` and ``start()`` take it down and bring it back on the same port mid-test. Use it as a
fixture in a test module::

    @pytest.fixture
    def redis_server() -> Iterator[RedisServer]:
        with running_redis() as server:
            yield server
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.support.relay_process import free_port
from tests.support.system import require_binary

START_TIMEOUT_S = 10.0


def require_redis() -> str:
    return require_binary("redis-server", package="redis-server")


@dataclass
class RedisServer:
    binary: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ping():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"redis-server exited with {self.proc.returncode}: {err[-1000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not answer PING")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = RedisServer(require_redis())
    server.start()
    try:
        yield server
    finally:
        server.stop()
