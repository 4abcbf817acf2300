"""How the overload benchmark tells a clean refusal from any other failure to connect."""

from __future__ import annotations

from bench.overload import Refusals


def test_only_a_503_with_retry_after_is_a_clean_refusal() -> None:
    refusals = Refusals()
    refusals.record("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nServer: relay", ConnectionError())
    refusals.record("HTTP/1.1 503 Service Unavailable\r\nServer: relay", ConnectionError())  # no Retry-After
    refusals.record("HTTP/1.1 500 Internal Server Error\r\nRetry-After: 5", ConnectionError())
    refusals.record("", ConnectionResetError("reset"))  # never answered
    assert refusals.clean == 1
    assert refusals.other == [
        "HTTP/1.1 503 Service Unavailable",
        "HTTP/1.1 500 Internal Server Error",
        "ConnectionResetError('reset')",
    ]
