"""A client's address behind trusted reverse proxies (relay.core.client_address)."""

from __future__ import annotations

import pytest

from relay.core.client_address import TrustedProxies

PROXIES = TrustedProxies(["10.0.0.0/8", "127.0.0.1", "2001:db8:1::/48"])


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        # Straight from the proxy: the hop it appended.
        ("10.1.2.3", ["203.0.113.7"], "203.0.113.7"),
        # What the client wrote itself, left of its own address, is ignored.
        ("10.1.2.3", ["198.51.100.1, 203.0.113.7"], "203.0.113.7"),
        ("10.1.2.3", ["nonsense", "203.0.113.7"], "203.0.113.7"),
        # Two proxies, both trusted: the one before them.
        ("10.1.2.3", ["198.51.100.1, 203.0.113.7, 10.9.9.9"], "203.0.113.7"),
        ("127.0.0.1", ["203.0.113.7", "10.9.9.9"], "203.0.113.7"),
        # Ports and IPv6, as proxies write them.
        ("10.1.2.3", ["203.0.113.7:51234"], "203.0.113.7"),
        ("10.1.2.3", ["[2001:db8:2::5]:443"], "2001:db8:2::5"),
        ("2001:db8:1::9", ["2001:db8:2::5"], "2001:db8:2::5"),
        ("::ffff:10.1.2.3", ["203.0.113.7"], "203.0.113.7"),  # a dual-stack socket's IPv4 proxy
        # Every hop trusted (a client inside the network): the leftmost.
        ("10.1.2.3", ["10.4.4.4, 10.5.5.5"], "10.4.4.4"),
        # A proxy that wrote no header, or garbage: the last address that stands.
        ("10.1.2.3", [], "10.1.2.3"),
        ("10.1.2.3", ["203.0.113.7, garbage"], "10.1.2.3"),
        # Not from a trusted proxy: the header is the client's own claim, never read.
        ("203.0.113.9", ["10.1.2.3"], "203.0.113.9"),
        ("198.51.100.1", ["127.0.0.1"], "198.51.100.1"),
        (None, ["203.0.113.7"], None),
    ],
)
def test_the_client_is_the_rightmost_hop_no_trusted_proxy_wrote(
    peer: str | None, headers: list[str], client: str | None
) -> None:
    assert PROXIES.client_address(peer, headers) == client


def test_without_trusted_proxies_the_header_is_never_read() -> None:
    nobody = TrustedProxies()
    assert not nobody
    assert nobody.client_address("127.0.0.1", ["203.0.113.7"]) == "127.0.0.1"


def test_a_setting_that_is_not_a_network_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        TrustedProxies(["10.0.0.0/8", "10.0.0.0/33"])
