"""Where outbound HTTP may go: the allow-list every outbound call is checked against.

A ``reply_url``, a helper URL or an attachment URL comes from outside, so a
call to it could be turned against internal services (SSRF). Every outbound
call is checked here first (the core's POSTs in ``core_worker/outbound_post.py``,
the edge's attachment fetches in ``edge/media/fetch.py``): the URL's host must
be named in ``SWITCHBOARD_ALLOWED_HOSTS`` or resolve only to addresses inside
its CIDRs; the caller connects to the address that was checked (no second DNS
lookup to rebind).  IPv4-mapped IPv6 addresses are checked as the IPv4 address
they are, and a host allowed by name may still never resolve to a
link-local (cloud metadata), unspecified or multicast address unless a CIDR
allows it: whoever controls the name's DNS could point it there.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["BlockedURL", "HostPolicy", "OutboundError", "Target"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundError(Exception):
    """An outbound call could not be made (network, timeout, TLS)."""


class BlockedURL(OutboundError):
    """The URL is malformed or points somewhere we may not call."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP the connection goes to


class HostPolicy:
    """Allow-list of host names (exact, or ``*.example.com``) and CIDRs."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[IPNetwork] = []
        self.names: list[str] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.append(entry.lower().rstrip("."))

    def _name_allowed(self, host: str) -> bool:
        for name in self.names:
            if name.startswith("*.") and host.endswith(name[1:]):
                return True
            if host == name:
                return True
        return False

    def _address_allowed(self, address: IPAddress) -> bool:
        return any(address in net for net in self.networks)

    def check(self, url: str) -> Target:
        """Validate ``url`` and pick the address to connect to; raise BlockedURL if not allowed."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise BlockedURL(f"scheme {parts.scheme!r} is not allowed (http or https only)")
        if parts.username or parts.password:
            raise BlockedURL("credentials in URLs are not allowed")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise BlockedURL("URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise BlockedURL(f"bad port in URL: {exc}") from exc
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        named = self._name_allowed(host)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise BlockedURL(f"host {host!r} does not resolve") from exc
        addresses = [_plain(str(info[4][0])) for info in infos]
        if not named and not all(self._address_allowed(a) for a in addresses):
            raise BlockedURL(f"host {host!r} is not in SWITCHBOARD_ALLOWED_HOSTS")
        for address in addresses:
            if _never_by_name(address) and not self._address_allowed(address):
                raise BlockedURL(f"host {host!r} resolves to {address}: only a CIDR in SWITCHBOARD_ALLOWED_HOSTS "
                                 "can allow link-local (cloud metadata), unspecified or multicast addresses")
        return Target(parts.scheme, host, port, path, str(addresses[0]))


def _plain(text: str) -> IPAddress:
    """The address as checked: no IPv6 zone, an IPv4-mapped IPv6 address as the IPv4 address it is."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _never_by_name(address: IPAddress) -> bool:
    """Addresses an allowed *name* may not lead to (DNS can be changed by whoever owns the name)."""
    return address.is_link_local or address.is_unspecified or address.is_multicast
