"""Whom a request came from when reverse proxies the operator trusts stand in front of the relay.

Behind nginx, an ingress controller or a load balancer, every connection comes from the proxy.
Limits kept per address (failed authentications) would then count every user as one: one client
guessing tokens would get everyone refused with 429. With ``RELAY_TRUSTED_PROXIES`` (networks),
a request whose TCP peer is in one of them is from the address its proxies put in
``X-Forwarded-For``: the rightmost hop that is not itself a trusted proxy. Every hop to the left
of it was written by the client and is ignored, so a client cannot choose its own address.
Without the setting the header is never read, since anyone could send it.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

Address = IPv4Address | IPv6Address


class TrustedProxies:
    def __init__(self, networks: Iterable[str] = ()) -> None:
        """``networks``: CIDRs or single addresses; raises ValueError for one that is neither."""
        self._networks: tuple[IPv4Network | IPv6Network, ...] = tuple(
            ip_network(network.strip(), strict=False) for network in networks
        )

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: Address | None) -> bool:
        if address is None:
            return False
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 proxy
        return any(address in network for network in self._networks)

    def client_address(self, peer: str | None, forwarded_for: Iterable[str]) -> str | None:
        """The client's address: ``peer`` (the TCP peer) unless it is a trusted proxy, then the
        rightmost untrusted hop of the ``X-Forwarded-For`` headers (all of them, in order). When
        every hop is trusted, the leftmost; a hop that is not an address ends the walk there (a
        proxy that wrote it is misconfigured; the address before it stands)."""
        if not self._networks:
            return peer
        current = _parse(peer)
        if current is None or not self.trusts(current):
            return peer
        hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = _parse(hop)
            if address is None:
                break
            current = address
            if not self.trusts(address):
                break
        return str(current)


def _parse(hop: str | None) -> Address | None:
    """An address as proxies write it: ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``,
    ``[2001:db8::1]:443``."""
    if hop is None:
        return None
    text = hop.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        return ip_address(text)
    except ValueError:
        return None
