"""Whether an address stays on this host: plaintext is allowed there and only there."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1; False for anything else, wildcards too."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host_port(address: str) -> tuple[str, str]:
    """``host:port``, ``[v6]:port`` or ``:port`` -> (host, port); an empty host means all."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port
